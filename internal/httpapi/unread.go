package httpapi

import (
	"context"
	"net/http"

	"github.com/parley-chat/parley/internal/cache"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/rollout"
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
	err := s.serveRead(w, r, u, readSpec{
		rollout:  rollout.UnreadCount,
		endpoint: chat.EndpointUnreadCount,
		query:    "unread",
		key:      cache.UserKey(u.ID, cache.KindUnread, ""),
		load: func(ctx context.Context, q postgres.Querier) ([]byte, error) {
			counts, err := s.cfg.Store.Unread(ctx, q, u.ID)
			if err != nil {
				return nil, err
			}
			out := unreadJSON{Conversations: make([]unreadConversationJSON, 0, len(counts))}
			for _, c := range counts {
				if c.Count <= 0 {
					continue
				}
				out.Total += c.Count
				out.Conversations = append(out.Conversations, unreadConversationJSON{ID: formatID(c.ConversationID), UnreadCount: c.Count})
			}
			return encodeJSON(out)
		},
	})
	if err != nil {
		s.fail(w, r, err)
	}
}
