package httpapi

import (
	"net/http"

	"github.com/parley-chat/parley/internal/chat"
)

// GET /admin/status (admin): what this instance sees now.
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.cfg.Admin.Status(r.Context()))
}

type rolloutsJSON struct {
	Rollouts []chat.Rollout `json:"rollouts"`
}

// GET /admin/rollouts (admin) → every endpoint's switch, as stored.
func (s *Server) handleListRollouts(w http.ResponseWriter, r *http.Request) {
	rs, err := s.cfg.Admin.Rollouts(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rolloutsJSON{Rollouts: rs})
}

// PUT /admin/rollouts/{endpoint} (admin) {"percent","cache","replica"}, any
// subset → 200 the endpoint's new state. Stored in PostgreSQL; this instance
// applies it at once, the others at their next poll (within a second).
func (s *Server) handleSetRollout(w http.ResponseWriter, r *http.Request) {
	endpoint := r.PathValue("endpoint")
	if err := chat.CheckRolloutEndpoint(endpoint); err != nil {
		s.fail(w, r, err)
		return
	}
	var u chat.RolloutUpdate
	if err := decodeJSON(r, &u); err != nil {
		s.fail(w, r, err)
		return
	}
	st, err := s.cfg.Admin.SetRollout(r.Context(), endpoint, u)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
