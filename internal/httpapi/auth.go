package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/parley-chat/parley/internal/chat"
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

// userHandler is a handler that acts for an authenticated user; opts are
// the request's consistency headers (zero for writes).
type userHandler func(w http.ResponseWriter, r *http.Request, u chat.User, opts chat.ReadOptions)

// user wraps a handler that acts for the user of the request's bearer token:
// no or unknown token 401, the admin token 403 (it is not a user). A GET's
// consistency headers are read first (a malformed one is 400).
func (s *Server) user(h userHandler) http.HandlerFunc {
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
		var opts chat.ReadOptions
		if r.Method == http.MethodGet {
			var err error
			if opts, err = parseReadOptions(r); err != nil {
				s.fail(w, r, err)
				return
			}
		}
		u, src, err := s.svc.Authenticate(r.Context(), token, opts)
		st := stateFrom(r.Context())
		if src != "" {
			st.readSource = src
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		st.userID = u.ID
		h(w, r, u, opts)
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
		if _, _, err := s.svc.Authenticate(r.Context(), token, chat.ReadOptions{}); err != nil {
			s.fail(w, r, err)
			return
		}
		s.fail(w, r, chat.Errorf(chat.EPERMISSION, "this endpoint needs the admin token"))
	}
}
