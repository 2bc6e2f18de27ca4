package chatsvc

import (
	"context"
	"strconv"

	"github.com/parley-chat/parley/internal/cache"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/postgres"
)

// History is one page of a conversation's history for member u: the newest,
// or the one before or after the request's cursor. A bad cursor is
// EINVALID; a conversation u is not a member of is ENOTFOUND.
func (s *Service) History(ctx context.Context, u chat.User, req chat.HistoryRequest, opts chat.ReadOptions) (chat.Read, error) {
	id := req.ConversationID
	page := chat.PageRequest{Direction: req.Direction, Limit: req.Limit}
	if req.Direction != chat.Newest {
		cur, err := s.enc.Cursors.Decode(chat.MessageCursor, id, req.Cursor)
		if err != nil {
			return chat.Read{}, err
		}
		page.Cursor = cur
	}
	// The body of an uncached read (load) is this request's alone: it is
	// encoded into a pooled buffer that the HTTP edge releases once written.
	// load may run twice (a replica, then the primary): the second run
	// reuses the buffer, whose first content nothing holds any more.
	var buf *chat.BodyBuffer
	rd, err := s.read(ctx, u, opts, readSpec{
		rollout:  chat.EndpointMessageHistory,
		endpoint: chat.EndpointMessageHistory,
		query:    "history_page",
		key:      cache.ConversationKey(id, cache.KindHistory, historyKey(req)),
		conv:     id,
		load: func(ctx context.Context, q postgres.Querier) ([]byte, error) {
			p, err := s.store.Messages(ctx, q, u.ID, id, page)
			if err != nil {
				return nil, err
			}
			if buf == nil {
				buf = chat.NewBodyBuffer()
			}
			return s.enc.EncodeMessagePageTo(buf, p, page.Direction, req.Cursor), nil
		},
		loadShared: func(ctx context.Context, q postgres.Querier) ([]byte, []int64, error) {
			p, members, err := s.store.MessagesAndMembers(ctx, q, u.ID, id, page)
			if err != nil {
				return nil, nil, err
			}
			return s.enc.EncodeMessagePage(p, page.Direction, req.Cursor), members, nil
		},
	})
	if buf.Owns(rd.Body) && err == nil {
		rd.Buf = buf
	} else {
		buf.Release()
	}
	return rd, err
}

// historyKey is the cache key part that selects a history page.
func historyKey(req chat.HistoryRequest) string {
	n := strconv.Itoa(req.Limit)
	switch req.Direction {
	case chat.Before:
		return "b:" + n + ":" + req.Cursor
	case chat.After:
		return "a:" + n + ":" + req.Cursor
	}
	return "n:" + n
}

// Conversations is one page of u's conversation list, newest activity
// first. It is cached under u's list generation.
func (s *Service) Conversations(ctx context.Context, u chat.User, req chat.ListRequest, opts chat.ReadOptions) (chat.Read, error) {
	page := chat.PageRequest{Direction: chat.Newest, Limit: req.Limit}
	given := ""
	if req.Direction != chat.Newest {
		cur, err := s.enc.Cursors.Decode(chat.ConversationListCursor, u.ID, req.Cursor)
		if err != nil {
			return chat.Read{}, err
		}
		page = chat.PageRequest{Direction: chat.Before, Cursor: cur, Limit: req.Limit}
		given = req.Cursor
	}
	return s.read(ctx, u, opts, readSpec{
		rollout:  chat.EndpointConversationList,
		endpoint: chat.EndpointConversationList,
		query:    "conversation_list",
		key:      cache.UserKey(u.ID, cache.KindConversations, "l:"+strconv.Itoa(req.Limit)+":"+given),
		load: func(ctx context.Context, q postgres.Querier) ([]byte, error) {
			p, err := s.store.Conversations(ctx, q, u.ID, page)
			if err != nil {
				return nil, err
			}
			return chat.EncodeJSON(s.enc.ConversationList(u.ID, p))
		},
	})
}

// Conversation is one conversation, for members only. It is an item of the
// caller's list (its unread count is the caller's), so the conversation_list
// rollout decides how it is served and the caller's list generation caches
// it.
func (s *Service) Conversation(ctx context.Context, u chat.User, convID int64, opts chat.ReadOptions) (chat.Read, error) {
	return s.read(ctx, u, opts, readSpec{
		rollout:  chat.EndpointConversationList,
		endpoint: chat.EndpointConversation,
		query:    "conversation",
		key:      cache.UserKey(u.ID, cache.KindConversations, "c:"+strconv.FormatInt(convID, 10)),
		load: func(ctx context.Context, q postgres.Querier) ([]byte, error) {
			c, err := s.store.Conversation(ctx, q, u.ID, convID)
			if err != nil {
				return nil, err
			}
			return chat.EncodeJSON(s.enc.Conversation(c))
		},
	})
}

// Unread is u's unread counts (the conversations with any).
func (s *Service) Unread(ctx context.Context, u chat.User, opts chat.ReadOptions) (chat.Read, error) {
	return s.read(ctx, u, opts, readSpec{
		rollout:  chat.EndpointUnreadCount,
		endpoint: chat.EndpointUnreadCount,
		query:    "unread",
		key:      cache.UserKey(u.ID, cache.KindUnread, ""),
		load: func(ctx context.Context, q postgres.Querier) ([]byte, error) {
			counts, err := s.store.Unread(ctx, q, u.ID)
			if err != nil {
				return nil, err
			}
			return chat.EncodeJSON(s.enc.Unread(counts))
		},
	})
}
