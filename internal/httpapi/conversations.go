package httpapi

import (
	"net/http"

	"github.com/parley-chat/parley/internal/chat"
)

// conversationID is the {id} of the path; a malformed one is an unknown id.
func conversationID(r *http.Request) (int64, error) {
	id, ok := chat.ParseID(r.PathValue("id"))
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
		if member := s.svc.CheckMember(r.Context(), u, convID); chat.ErrorCode(member) == chat.ENOTFOUND {
			err = member
		}
	}
	s.fail(w, r, err)
}

// POST /v1/conversations {"title","member_ids"} → 201 the conversation.
func (s *Server) handleCreateConversation(w http.ResponseWriter, r *http.Request, u chat.User, _ chat.ReadOptions) {
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
		id, ok := chat.ParseID(v)
		if !ok {
			s.fail(w, r, chat.Errorf(chat.EINVALID, "member_ids[%d]: %q is not a user id", i, v))
			return
		}
		ids[i] = id
	}
	ack, err := s.svc.CreateConversation(r.Context(), u, in.Title, ids)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setToken(w, ack.Token)
	writeJSON(w, http.StatusCreated, s.enc.Conversation(ack.Value))
}

// GET /v1/conversations/{id} → the conversation, for members only.
func (s *Server) handleGetConversation(w http.ResponseWriter, r *http.Request, u chat.User, opts chat.ReadOptions) {
	id, err := conversationID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rd, err := s.svc.Conversation(r.Context(), u, id, opts)
	s.writeRead(w, r, rd, err)
}

// GET /v1/conversations?limit=30&cursor=C → the caller's conversations by
// last activity, newest first.
func (s *Server) handleListConversations(w http.ResponseWriter, r *http.Request, u chat.User, opts chat.ReadOptions) {
	q := r.URL.Query()
	limit, err := parseLimit(q, chat.DefaultConvListLimit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	req := chat.ListRequest{Direction: chat.Newest, Limit: limit}
	if q.Has("cursor") {
		req.Direction, req.Cursor = chat.Before, q.Get("cursor")
	}
	rd, err := s.svc.Conversations(r.Context(), u, req, opts)
	s.writeRead(w, r, rd, err)
}
