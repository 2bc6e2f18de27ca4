package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/parley-chat/parley/internal/cache"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/monitor"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/rollout"
)

type conversationJSON struct {
	ID            string       `json:"id"`
	Title         string       `json:"title"`
	MemberIDs     []string     `json:"member_ids"`
	CreatedAt     string       `json:"created_at"`
	LastMessageAt *string      `json:"last_message_at"`
	LastMessage   *messageJSON `json:"last_message"`
	UnreadCount   int64        `json:"unread_count"`
}

func (s *Server) conversationOut(c chat.Conversation) conversationJSON {
	out := conversationJSON{
		ID:          formatID(c.ID),
		Title:       c.Title,
		MemberIDs:   make([]string, len(c.MemberIDs)),
		CreatedAt:   formatTime(c.CreatedAt),
		UnreadCount: c.UnreadCount,
	}
	for i, id := range c.MemberIDs {
		out.MemberIDs[i] = formatID(id)
	}
	if c.LastMessage != nil {
		at := formatTime(c.LastMessage.CreatedAt)
		m := s.messageOut(*c.LastMessage)
		out.LastMessageAt, out.LastMessage = &at, &m
	}
	return out
}

// conversationID is the {id} of the path; a malformed one is an unknown id.
func conversationID(r *http.Request) (int64, error) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		return 0, chat.Errorf(chat.ENOTFOUND, "conversation not found")
	}
	return id, nil
}

// failIn answers err for a request on conversation convID. A non-member
// must learn nothing about a conversation, not even that a request on it
// was malformed: a client error becomes 404 unless the caller is a member
// (one extra read, on error paths only).
func (s *Server) failIn(w http.ResponseWriter, r *http.Request, u chat.User, convID int64, err error) {
	if code := chat.ErrorCode(err); code == chat.EINVALID || code == chat.ETOOLARGE {
		member := s.read(r.Context(), chat.EndpointConversation, func(ctx context.Context, q postgres.Querier) error {
			_, err := s.cfg.Store.Conversation(ctx, q, u.ID, convID)
			return err
		})
		if chat.ErrorCode(member) == chat.ENOTFOUND {
			err = member
		}
	}
	s.fail(w, r, err)
}

// POST /v1/conversations {"title","member_ids"} → 201 the conversation.
func (s *Server) handleCreateConversation(w http.ResponseWriter, r *http.Request, u chat.User) {
	var in struct {
		Title     string   `json:"title"`
		MemberIDs []string `json:"member_ids"`
	}
	if err := decodeJSON(r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	if len(in.MemberIDs) > chat.MaxMembers {
		s.fail(w, r, chat.Errorf(chat.EINVALID, "member_ids: at most %d members", chat.MaxMembers))
		return
	}
	ids := make([]int64, len(in.MemberIDs))
	for i, v := range in.MemberIDs {
		id, ok := parseID(v)
		if !ok {
			s.fail(w, r, chat.Errorf(chat.EINVALID, "member_ids[%d]: %q is not a user id", i, v))
			return
		}
		ids[i] = id
	}
	wctx, pos := postgres.WithCommitPosition(monitor.WithQueryName(r.Context(), "create_conversation"))
	c, err := s.cfg.Store.CreateConversation(wctx, u.ID, in.Title, ids)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.acknowledge(w, r, u.ID, pos, func(ctx context.Context, pos string) {
		s.cache.InvalidateConversation(ctx, c.ID, c.MemberIDs, pos)
	})
	writeJSON(w, http.StatusCreated, s.conversationOut(c))
}

// GET /v1/conversations/{id} → the conversation, for members only. It is
// an item of the caller's list (its unread count is the caller's), so the
// conversation_list rollout decides how it is served and the caller's list
// generation caches it.
func (s *Server) handleGetConversation(w http.ResponseWriter, r *http.Request, u chat.User) {
	id, err := conversationID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	err = s.serveRead(w, r, u, readSpec{
		rollout:  rollout.ConversationList,
		endpoint: chat.EndpointConversation,
		query:    "conversation",
		key:      cache.UserKey(u.ID, cache.KindConversations, "c:"+strconv.FormatInt(id, 10)),
		load: func(ctx context.Context, q postgres.Querier) ([]byte, error) {
			c, err := s.cfg.Store.Conversation(ctx, q, u.ID, id)
			if err != nil {
				return nil, err
			}
			return encodeJSON(s.conversationOut(c))
		},
	})
	if err != nil {
		s.fail(w, r, err)
	}
}

type conversationListJSON struct {
	Conversations []conversationJSON `json:"conversations"`
	NextCursor    *string            `json:"next_cursor"`
}

// GET /v1/conversations?limit=30&cursor=C → the caller's conversations by
// last activity, newest first.
func (s *Server) handleListConversations(w http.ResponseWriter, r *http.Request, u chat.User) {
	q := r.URL.Query()
	limit, err := parseLimit(q, chat.DefaultConvListLimit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page := chat.PageRequest{Direction: chat.Newest, Limit: limit}
	if q.Has("cursor") {
		cur, err := s.cfg.Cursors.Decode(chat.ConversationListCursor, u.ID, q.Get("cursor"))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		page = chat.PageRequest{Direction: chat.Before, Cursor: cur, Limit: limit}
	}
	given := q.Get("cursor")
	err = s.serveRead(w, r, u, readSpec{
		rollout:  rollout.ConversationList,
		endpoint: chat.EndpointConversationList,
		query:    "conversation_list",
		key:      cache.UserKey(u.ID, cache.KindConversations, "l:"+strconv.Itoa(limit)+":"+given),
		load: func(ctx context.Context, q postgres.Querier) ([]byte, error) {
			p, err := s.cfg.Store.Conversations(ctx, q, u.ID, page)
			if err != nil {
				return nil, err
			}
			out := conversationListJSON{Conversations: make([]conversationJSON, len(p.Conversations))}
			for i, c := range p.Conversations {
				out.Conversations[i] = s.conversationOut(c)
			}
			if p.HasMore {
				next := s.cfg.Cursors.Encode(chat.ConversationListCursor, u.ID, p.Conversations[len(p.Conversations)-1].ListCursor())
				out.NextCursor = &next
			}
			return encodeJSON(out)
		},
	})
	if err != nil {
		s.fail(w, r, err)
	}
}
