package httpapi

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/parley-chat/parley/internal/chat"
)

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
func (s *Server) handleSendMessage(w http.ResponseWriter, r *http.Request, u chat.User, _ chat.ReadOptions) {
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
	ack, err := s.svc.Send(r.Context(), u, req)
	if err != nil {
		s.failIn(w, r, u, id, err)
		return
	}
	setToken(w, ack.Token)
	status := http.StatusCreated
	if !ack.Value.Created {
		status = http.StatusOK
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, status, s.enc.Message(ack.Value.Message))
}

// GET /v1/conversations/{id}/messages?limit=50[&before=C|&after=C].
func (s *Server) handleListMessages(w http.ResponseWriter, r *http.Request, u chat.User, opts chat.ReadOptions) {
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
	req := chat.HistoryRequest{ConversationID: id, Direction: chat.Newest, Limit: limit}
	switch {
	case q.Has("before"):
		req.Direction, req.Cursor = chat.Before, q.Get("before")
	case q.Has("after"):
		req.Direction, req.Cursor = chat.After, q.Get("after")
	}
	rd, err := s.svc.History(r.Context(), u, req, opts)
	served(r, rd)
	if err != nil {
		s.failIn(w, r, u, id, err)
		return
	}
	writeBody(w, http.StatusOK, rd.Body)
	rd.Release()
}

// POST /v1/conversations/{id}/read {"message_id"} → 200 {"unread_count"}.
func (s *Server) handleMarkRead(w http.ResponseWriter, r *http.Request, u chat.User, _ chat.ReadOptions) {
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
	msg, ok := chat.ParseID(in.MessageID)
	if !ok {
		s.failIn(w, r, u, id, chat.Errorf(chat.EINVALID, "message_id: %q is not a message id", in.MessageID))
		return
	}
	ack, err := s.svc.MarkRead(r.Context(), u, id, msg)
	if err != nil {
		s.failIn(w, r, u, id, err)
		return
	}
	setToken(w, ack.Token)
	writeJSON(w, http.StatusOK, struct {
		UnreadCount int64 `json:"unread_count"`
	}{ack.Value})
}
