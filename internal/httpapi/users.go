package httpapi

import (
	"net/http"

	"github.com/parley-chat/parley/internal/chat"
)

// POST /v1/users (admin) {"handle","display_name"} → 201 the user with its token.
func (s *Server) handleCreateUser(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Handle      string `json:"handle"`
		DisplayName string `json:"display_name"`
	}
	if err := decodeJSON(r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	ack, err := s.svc.CreateUser(r.Context(), in.Handle, in.DisplayName)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setToken(w, ack.Token)
	out := s.enc.User(ack.Value.User)
	out.Token = ack.Value.Token
	writeJSON(w, http.StatusCreated, out)
}

// GET /v1/me → the caller.
func (s *Server) handleMe(w http.ResponseWriter, r *http.Request, u chat.User, _ chat.ReadOptions) {
	writeJSON(w, http.StatusOK, s.enc.User(u))
}

// writeRead answers a read with the body the service made, or its error.
func (s *Server) writeRead(w http.ResponseWriter, r *http.Request, rd chat.Read, err error) {
	served(r, rd)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeBody(w, http.StatusOK, rd.Body)
}
