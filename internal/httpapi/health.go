package httpapi

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/parley-chat/parley/internal/chat"
)

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

type componentStatus struct {
	Status   string `json:"status"` // ok | down
	Required bool   `json:"required"`
	Error    string `json:"error,omitempty"`
}

type readiness struct {
	Status     string                     `json:"status"` // ok | degraded | unavailable
	Components map[string]componentStatus `json:"components"`
}

// handleReadyz is 200 while every required component answers (status "ok",
// or "degraded" when an optional one — a replica, the cache — is down), 503
// otherwise. Probes run in parallel with a short timeout.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	res := readiness{Status: "ok", Components: make(map[string]componentStatus, len(s.cfg.Checks))}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range s.cfg.Checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := componentStatus{Status: "ok", Required: c.Required}
			if err := c.Probe(ctx); err != nil {
				// /readyz is unauthenticated: the driver's error (user,
				// database, host:port) goes to the log, not the response.
				st.Status = "down"
				st.Error = probeError(ctx, err)
				s.cfg.Logger.Warn("readiness probe failed", "component", c.Name, "err", err)
			}
			mu.Lock()
			res.Components[c.Name] = st
			mu.Unlock()
		}()
	}
	wg.Wait()
	code := http.StatusOK
	for _, c := range res.Components {
		if c.Status == "ok" {
			continue
		}
		if c.Required {
			res.Status = "unavailable"
			code = http.StatusServiceUnavailable
		} else if res.Status == "ok" {
			res.Status = "degraded"
		}
	}
	if code != http.StatusOK {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, code, res)
}

// probeError is what /readyz says of a failed probe: the kind of failure,
// never its details.
func probeError(ctx context.Context, err error) string {
	switch {
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case chat.ErrorCode(err) == chat.EUNAVAILABLE:
		return "unreachable"
	}
	return "not answering"
}
