package httpapi

import (
	"errors"
	"net/http"
	"slices"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/dbrouter"
	"github.com/parley-chat/parley/internal/rollout"
)

// statusJSON is GET /admin/status: what this instance sees now. Nothing in
// it waits for a database: replicas and pools are the router's latest probe
// and pool counters, rollouts this instance's applied snapshot, monitors
// their latest polls.
type statusJSON struct {
	Replicas []dbrouter.ReplicaStatus     `json:"replicas"`
	Cache    cacheStatusJSON              `json:"cache"`
	Pools    map[string]dbrouter.PoolStat `json:"pools"`
	Rollouts map[string]rollout.State     `json:"rollouts"`
	Monitors any                          `json:"monitors"`
}

type cacheStatusJSON struct {
	State string `json:"state"` // up | down (no Redis configured: down)
}

// GET /admin/status (admin).
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	out := statusJSON{
		Replicas: []dbrouter.ReplicaStatus{},
		Cache:    cacheStatusJSON{State: "down"},
		Pools:    map[string]dbrouter.PoolStat{},
		Rollouts: map[string]rollout.State{},
		Monitors: struct{}{},
	}
	if s.router != nil {
		out.Replicas = s.router.Status()
		for _, p := range s.router.PoolStats() {
			out.Pools[p.Name] = p
		}
	}
	if s.cache.Up() {
		out.Cache.State = "up"
	}
	if s.cfg.Rollouts != nil {
		for _, st := range s.cfg.Rollouts.Snapshot() {
			out.Rollouts[st.Endpoint] = st
		}
	}
	if s.cfg.Monitors != nil {
		out.Monitors = s.cfg.Monitors.Summary()
	}
	writeJSON(w, http.StatusOK, out)
}

type rolloutsJSON struct {
	Rollouts []rollout.State `json:"rollouts"`
}

// GET /admin/rollouts (admin) → every endpoint's switch, as stored.
func (s *Server) handleListRollouts(w http.ResponseWriter, r *http.Request) {
	states, err := s.cfg.Rollouts.List(r.Context())
	if err != nil {
		s.fail(w, r, rolloutError(err))
		return
	}
	writeJSON(w, http.StatusOK, rolloutsJSON{Rollouts: states})
}

// PUT /admin/rollouts/{endpoint} (admin) {"percent","cache","replica"}, any
// subset → 200 the endpoint's new state. Stored in PostgreSQL; this instance
// applies it at once, the others at their next poll (within a second).
func (s *Server) handleSetRollout(w http.ResponseWriter, r *http.Request) {
	endpoint := r.PathValue("endpoint")
	if !slices.Contains(rollout.Endpoints(), endpoint) {
		s.fail(w, r, chat.Errorf(chat.ENOTFOUND, "no rollout for endpoint %q; the endpoints are %v", endpoint, rollout.Endpoints()))
		return
	}
	var u rollout.Update
	if err := decodeJSON(r, &u); err != nil {
		s.fail(w, r, err)
		return
	}
	st, err := s.cfg.Rollouts.Set(r.Context(), endpoint, u)
	if err != nil {
		s.fail(w, r, rolloutError(err))
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// rolloutError maps the rollout store's input errors to the domain codes.
func rolloutError(err error) error {
	switch {
	case errors.Is(err, rollout.ErrUnknownEndpoint):
		return chat.Errorf(chat.ENOTFOUND, "%v", err)
	case errors.Is(err, rollout.ErrInvalid):
		return chat.Errorf(chat.EINVALID, "%v", err)
	}
	return err
}
