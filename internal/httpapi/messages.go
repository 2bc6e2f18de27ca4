package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/parley-chat/parley/internal/cache"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/monitor"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/rollout"
)

type messageJSON struct {
	ID             string `json:"id"`
	ConversationID string `json:"conversation_id"`
	SenderID       string `json:"sender_id"`
	Body           string `json:"body"`
	CreatedAt      string `json:"created_at"`
	Cursor         string `json:"cursor"`
}

func (s *Server) messageOut(m chat.Message) messageJSON {
	return messageJSON{
		ID:             formatID(m.ID),
		ConversationID: formatID(m.ConversationID),
		SenderID:       formatID(m.SenderID),
		Body:           m.Body,
		CreatedAt:      formatTime(m.CreatedAt),
		Cursor:         s.cfg.Cursors.Encode(chat.MessageCursor, m.ConversationID, m.Cursor()),
	}
}

// parseLimit reads the limit parameter: def when absent, else 1–100.
func parseLimit(q url.Values, def int) (int, error) {
	if !q.Has("limit") {
		return def, nil
	}
	n, err := strconv.Atoi(q.Get("limit"))
	if err != nil {
		return 0, chat.Errorf(chat.EINVALID, "limit must be an integer between 1 and %d", chat.MaxPageLimit)
	}
	if err := chat.ValidateLimit(n); err != nil {
		return 0, err
	}
	return n, nil
}

// POST /v1/conversations/{id}/messages {"body"} (+ Idempotency-Key) → 201
// the new message, or 200 the message an earlier identical request stored.
func (s *Server) handleSendMessage(w http.ResponseWriter, r *http.Request, u chat.User) {
	id, err := conversationID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	req := chat.SendRequest{ConversationID: id, SenderID: u.ID}
	if keys := r.Header.Values("Idempotency-Key"); len(keys) > 0 {
		if len(keys) > 1 {
			s.failIn(w, r, u, id, chat.Errorf(chat.EINVALID, "send one Idempotency-Key header"))
			return
		}
		if err := chat.ValidateIdempotencyKey(keys[0]); err != nil {
			s.failIn(w, r, u, id, err)
			return
		}
		req.IdempotencyKey = keys[0]
	}
	var in struct {
		Body string `json:"body"`
	}
	if err := decodeJSON(r, &in); err != nil {
		s.failIn(w, r, u, id, err)
		return
	}
	if err := chat.ValidateBody(in.Body); err != nil {
		s.failIn(w, r, u, id, err)
		return
	}
	req.Body = in.Body
	wctx, pos := postgres.WithCommitPosition(monitor.WithQueryName(r.Context(), "send_message"))
	res, err := s.cfg.Store.SendMessage(wctx, req)
	if err != nil {
		s.failIn(w, r, u, id, err)
		return
	}
	// Also for a replayed send: the first attempt may have committed and
	// died before invalidating.
	s.acknowledge(w, r, u.ID, pos, func(ctx context.Context, pos string) {
		s.cache.InvalidateConversation(ctx, id, res.MemberIDs, pos)
	})
	status := http.StatusCreated
	if !res.Created {
		status = http.StatusOK
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, status, s.messageOut(res.Message))
}

type messagePageJSON struct {
	Messages   []messageJSON `json:"messages"`
	HasMore    bool          `json:"has_more"`
	NextCursor *string       `json:"next_cursor"`
}

// GET /v1/conversations/{id}/messages?limit=50[&before=C|&after=C].
//
// next_cursor: for the newest page and before=, the cursor to pass as
// before for the next older page, null when has_more is false. For after=,
// the cursor to pass as after next time: the newest message returned, or the
// cursor given when nothing newer exists yet — never null, so a client can
// keep polling with it.
func (s *Server) handleListMessages(w http.ResponseWriter, r *http.Request, u chat.User) {
	id, err := conversationID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	limit, err := parseLimit(q, chat.DefaultMessageLimit)
	if err != nil {
		s.failIn(w, r, u, id, err)
		return
	}
	if q.Has("before") && q.Has("after") {
		s.failIn(w, r, u, id, chat.Errorf(chat.EINVALID, "pass before or after, not both"))
		return
	}
	page := chat.PageRequest{Direction: chat.Newest, Limit: limit}
	var given string
	for _, d := range []struct {
		param string
		dir   chat.Direction
	}{{"before", chat.Before}, {"after", chat.After}} {
		if !q.Has(d.param) {
			continue
		}
		given = q.Get(d.param)
		cur, err := s.cfg.Cursors.Decode(chat.MessageCursor, id, given)
		if err != nil {
			s.failIn(w, r, u, id, err)
			return
		}
		page = chat.PageRequest{Direction: d.dir, Cursor: cur, Limit: limit}
	}
	err = s.serveRead(w, r, u, readSpec{
		rollout:  rollout.MessageHistory,
		endpoint: chat.EndpointMessageHistory,
		query:    "history_page",
		key:      cache.ConversationKey(id, cache.KindHistory, historyKey(page, limit, given)),
		conv:     id,
		load: func(ctx context.Context, q postgres.Querier) ([]byte, error) {
			p, err := s.cfg.Store.Messages(ctx, q, u.ID, id, page)
			if err != nil {
				return nil, err
			}
			return encodeJSON(s.messagePageOut(p, page.Direction, given))
		},
	})
	if err != nil {
		s.failIn(w, r, u, id, err)
	}
}

// historyKey is the cache key part that selects a history page.
func historyKey(page chat.PageRequest, limit int, cursor string) string {
	n := strconv.Itoa(limit)
	switch page.Direction {
	case chat.Before:
		return "b:" + n + ":" + cursor
	case chat.After:
		return "a:" + n + ":" + cursor
	}
	return "n:" + n
}

// messagePageOut is a history page on the wire. The page is the same for
// every member (cursors are bound to the conversation, not the reader).
func (s *Server) messagePageOut(p chat.MessagePage, dir chat.Direction, given string) messagePageJSON {
	out := messagePageJSON{Messages: make([]messageJSON, len(p.Messages)), HasMore: p.HasMore}
	for i, m := range p.Messages {
		out.Messages[i] = s.messageOut(m)
	}
	switch {
	case dir == chat.After && len(out.Messages) > 0:
		out.NextCursor = &out.Messages[len(out.Messages)-1].Cursor
	case dir == chat.After:
		out.NextCursor = &given
	case p.HasMore:
		out.NextCursor = &out.Messages[len(out.Messages)-1].Cursor
	}
	return out
}

// POST /v1/conversations/{id}/read {"message_id"} → 200 {"unread_count"}.
func (s *Server) handleMarkRead(w http.ResponseWriter, r *http.Request, u chat.User) {
	id, err := conversationID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var in struct {
		MessageID string `json:"message_id"`
	}
	if err := decodeJSON(r, &in); err != nil {
		s.failIn(w, r, u, id, err)
		return
	}
	msg, ok := parseID(in.MessageID)
	if !ok {
		s.failIn(w, r, u, id, chat.Errorf(chat.EINVALID, "message_id: %q is not a message id", in.MessageID))
		return
	}
	wctx, pos := postgres.WithCommitPosition(monitor.WithQueryName(r.Context(), "mark_read"))
	n, err := s.cfg.Store.MarkRead(wctx, u.ID, id, msg)
	if err != nil {
		s.failIn(w, r, u, id, err)
		return
	}
	// Only the reader's view changed: their list and unread counts.
	s.acknowledge(w, r, u.ID, pos, func(ctx context.Context, pos string) {
		s.cache.InvalidateUser(ctx, u.ID, pos)
	})
	writeJSON(w, http.StatusOK, struct {
		UnreadCount int64 `json:"unread_count"`
	}{n})
}
