package httpapi

import (
	"context"
	"net/http"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/postgres"
)

type unreadJSON struct {
	Total         int64                    `json:"total"`
	Conversations []unreadConversationJSON `json:"conversations"`
}

type unreadConversationJSON struct {
	ID          string `json:"id"`
	UnreadCount int64  `json:"unread_count"`
}

// GET /v1/unread → the caller's unread counts (conversations with any).
func (s *Server) handleUnread(w http.ResponseWriter, r *http.Request, u chat.User) {
	var counts []chat.UnreadCount
	err := s.read(r.Context(), chat.EndpointUnreadCount, func(ctx context.Context, q postgres.Querier) error {
		var err error
		counts, err = s.cfg.Store.Unread(ctx, q, u.ID)
		return err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := unreadJSON{Conversations: make([]unreadConversationJSON, 0, len(counts))}
	for _, c := range counts {
		if c.Count <= 0 {
			continue
		}
		out.Total += c.Count
		out.Conversations = append(out.Conversations, unreadConversationJSON{ID: formatID(c.ConversationID), UnreadCount: c.Count})
	}
	s.readSource(w, r)
	writeJSON(w, http.StatusOK, out)
}
