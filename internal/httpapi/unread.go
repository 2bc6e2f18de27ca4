package httpapi

import (
	"net/http"

	"github.com/parley-chat/parley/internal/chat"
)

// GET /v1/unread → the caller's unread counts (conversations with any).
func (s *Server) handleUnread(w http.ResponseWriter, r *http.Request, u chat.User, opts chat.ReadOptions) {
	rd, err := s.svc.Unread(r.Context(), u, opts)
	s.writeRead(w, r, rd, err)
}
