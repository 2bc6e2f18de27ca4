package httpapi

import (
	"context"
	"net/http"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/monitor"
	"github.com/parley-chat/parley/internal/postgres"
)

type userJSON struct {
	ID          string `json:"id"`
	Handle      string `json:"handle"`
	DisplayName string `json:"display_name"`
	Token       string `json:"token,omitempty"`
}

func userOut(u chat.User) userJSON {
	return userJSON{ID: formatID(u.ID), Handle: u.Handle, DisplayName: u.DisplayName}
}

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
	wctx, pos := postgres.WithCommitPosition(monitor.WithQueryName(r.Context(), "create_user"))
	u, token, err := s.cfg.Store.CreateUser(wctx, in.Handle, in.DisplayName)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// Nothing cached can show a new user; the token lets a client read the
	// user back from anywhere (the admin is not the user: no stored token).
	s.acknowledge(w, r, 0, pos, nil)
	out := userOut(u)
	out.Token = token
	writeJSON(w, http.StatusCreated, out)
}

// GET /v1/me → the caller.
func (s *Server) handleMe(w http.ResponseWriter, r *http.Request, u chat.User) {
	s.readSource(w, r)
	writeJSON(w, http.StatusOK, userOut(u))
}

// read runs fn through the reader (the primary, without routing options)
// and records where it ran.
func (s *Server) read(ctx context.Context, endpoint string, fn func(ctx context.Context, q postgres.Querier) error) error {
	src, err := s.reader.Read(ctx, endpoint, fn)
	if src != "" {
		SetReadSource(ctx, src)
	}
	return err
}

// readSource sets X-Read-Source on a read's response: where the read ran
// (SetReadSource), the primary unless told otherwise.
func (s *Server) readSource(w http.ResponseWriter, r *http.Request) {
	src := sourcePrimary
	if st := stateFrom(r.Context()); st != nil && st.readSource != "" {
		src = st.readSource
	}
	w.Header().Set(headerReadSource, src)
}
