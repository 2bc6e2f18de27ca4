package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/monitor"
	"github.com/parley-chat/parley/internal/postgres"
)

func tokenHash(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// bearer is the token of an "Authorization: Bearer <token>" header, or "".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// isAdmin compares token with the admin token in constant time (of equal
// length digests, so the length leaks nothing either).
func (s *Server) isAdmin(token string) bool {
	if !s.hasAdmin {
		return false
	}
	h := tokenHash(token)
	return subtle.ConstantTimeCompare(h[:], s.adminHash[:]) == 1
}

// lookupUser finds the user of a bearer token: from this instance's memory
// of recent tokens (authCache) unless the request asked for strong
// consistency, else from the database. An unknown token read anywhere but
// on the primary is checked again on the primary: a user created a moment
// ago may not have been replayed to a replica yet.
func (s *Server) lookupUser(ctx context.Context, token string) (chat.User, error) {
	key := sha256.Sum256([]byte(token))
	now := time.Now()
	st := stateFrom(ctx)
	if st == nil || !st.read.strong {
		if u, ok := s.auth.get(key, now); ok {
			SetReadSource(ctx, sourceCache)
			return u, nil
		}
	}
	ctx = monitor.WithQueryName(ctx, "user_by_token")
	var u chat.User
	find := func(ctx context.Context, q postgres.Querier) error {
		var err error
		u, err = s.cfg.Store.UserByToken(ctx, q, token)
		return err
	}
	src, err := s.reader.Read(ctx, chat.EndpointAuth, find)
	if chat.ErrorCode(err) == chat.EUNAUTHENTICATED && src != postgres.TargetPrimary && s.primary != nil {
		src, err = s.primary.Read(ctx, chat.EndpointAuth, find)
	}
	if src != "" {
		SetReadSource(ctx, src)
	}
	if err == nil {
		s.auth.put(key, u, now)
	}
	return u, err
}

// user wraps a handler that acts for the user of the request's bearer token:
// no or unknown token 401, the admin token 403 (it is not a user).
func (s *Server) user(h func(w http.ResponseWriter, r *http.Request, u chat.User)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token := bearer(r)
		if token == "" {
			s.fail(w, r, chat.Errorf(chat.EUNAUTHENTICATED, "missing bearer token: send Authorization: Bearer <token>"))
			return
		}
		if s.isAdmin(token) {
			s.fail(w, r, chat.Errorf(chat.EPERMISSION, "the admin token cannot act as a user; use a user token"))
			return
		}
		st := stateFrom(r.Context())
		if r.Method == http.MethodGet {
			opts, err := parseReadOptions(r)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			st.read = opts
		}
		u, err := s.lookupUser(r.Context(), token)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		st.userID = u.ID
		h(w, r, u)
	}
}

// admin wraps a handler for the admin token only: a user token 403, no or
// unknown token 401.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token := bearer(r)
		if token == "" {
			s.fail(w, r, chat.Errorf(chat.EUNAUTHENTICATED, "missing bearer token: send Authorization: Bearer <admin token>"))
			return
		}
		if s.isAdmin(token) {
			h(w, r)
			return
		}
		if _, err := s.lookupUser(r.Context(), token); err != nil {
			s.fail(w, r, err)
			return
		}
		s.fail(w, r, chat.Errorf(chat.EPERMISSION, "this endpoint needs the admin token"))
	}
}
