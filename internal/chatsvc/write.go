package chatsvc

import (
	"context"
	"errors"
	"time"

	"github.com/parley-chat/parley/internal/cache"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/monitor"
	"github.com/parley-chat/parley/internal/wal"
)

// ackTimeout bounds the work after a commit (position, token, invalidation).
const ackTimeout = 2 * time.Second

// CreateUser stores a user and its bearer token. Nothing cached can show a
// new user. The new user's stored token is their creation: it starts their
// record in Redis, so that their reads know from the start that no other
// write of theirs can be missing (cache.UserToken); the returned token lets
// a client read the user back from anywhere.
func (s *Service) CreateUser(ctx context.Context, handle, displayName string) (chat.Ack[chat.NewUser], error) {
	u, token, pos, err := s.store.CreateUser(monitor.WithQueryName(ctx, "create_user"), handle, displayName)
	if err != nil {
		return chat.Ack[chat.NewUser]{}, DomainError(ctx, err)
	}
	return chat.Ack[chat.NewUser]{Value: chat.NewUser{User: u, Token: token}, Token: s.acknowledge(ctx, u.ID, pos, nil)}, nil
}

// CreateConversation stores a conversation of u and memberIDs; every
// member's list changes.
func (s *Service) CreateConversation(ctx context.Context, u chat.User, title string, memberIDs []int64) (chat.Ack[chat.Conversation], error) {
	c, pos, err := s.store.CreateConversation(monitor.WithQueryName(ctx, "create_conversation"), u.ID, title, memberIDs)
	if err != nil {
		return chat.Ack[chat.Conversation]{}, DomainError(ctx, err)
	}
	token := s.acknowledge(ctx, u.ID, pos, func(ctx context.Context, pos wal.LSN) error {
		return s.cache.InvalidateConversation(ctx, c.ID, c.MemberIDs, pos)
	})
	return chat.Ack[chat.Conversation]{Value: c, Token: token}, nil
}

// Send stores a message from u (idempotent with a key). The conversation
// and every member's list and counts change. A replayed send is
// acknowledged too: the first attempt may have committed and died before
// invalidating.
func (s *Service) Send(ctx context.Context, u chat.User, req chat.SendRequest) (chat.Ack[chat.SendResult], error) {
	req.SenderID = u.ID
	res, pos, err := s.store.SendMessage(monitor.WithQueryName(ctx, "send_message"), req)
	if err != nil {
		return chat.Ack[chat.SendResult]{}, DomainError(ctx, err)
	}
	token := s.acknowledge(ctx, u.ID, pos, func(ctx context.Context, pos wal.LSN) error {
		return s.cache.InvalidateConversation(ctx, req.ConversationID, res.MemberIDs, pos)
	})
	return chat.Ack[chat.SendResult]{Value: res, Token: token}, nil
}

// MarkRead moves u's read marker forward and returns the conversation's
// unread count. Only the reader's view changes: their list and counts.
func (s *Service) MarkRead(ctx context.Context, u chat.User, convID, messageID int64) (chat.Ack[int64], error) {
	n, pos, err := s.store.MarkRead(monitor.WithQueryName(ctx, "mark_read"), u.ID, convID, messageID)
	if err != nil {
		return chat.Ack[int64]{}, DomainError(ctx, err)
	}
	token := s.acknowledge(ctx, u.ID, pos, func(ctx context.Context, pos wal.LSN) error {
		return s.cache.InvalidateUser(ctx, u.ID, pos)
	})
	return chat.Ack[int64]{Value: n, Token: token}, nil
}

// acknowledge runs after a write of userID committed and before it is
// answered: it turns the write's position (committed: read on the write's
// own connection right after the commit; 0 if that failed) into a token,
// raises the user's read-your-writes token to it, and runs invalidate with
// it (the cache's duties, whatever the rollout says: a later step of the
// rollout must not find stale entries). None of it can fail the write. A
// position that cannot be read at all (the primary gone right after the
// commit) must not let the user's next read reach a replica that lacks the
// write: the user's token is raised to wal.Unknown, which keeps their reads
// on the primary until it expires; the invalidation runs with an unknown
// position (fills from the primary only).
//
// When Redis did not get the token or an invalidation (an outage), the
// write is not answered until it has (cache.AwaitDelivery), or until Redis
// has been unreachable long enough that every instance will ignore what it
// held (the cache epoch lapsed): otherwise another instance could serve a
// value or route a read by a token older than this acknowledged write.
// That wait is at most ~1 s, at the start of an outage. It returns the
// token (0 when unknown).
func (s *Service) acknowledge(ctx context.Context, userID int64, committed wal.LSN, invalidate func(ctx context.Context, pos wal.LSN) error) wal.LSN {
	// The write is committed: finish even if the client has gone.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
	defer cancel()
	pos := s.commitToken(ctx, committed)
	owed := false
	if userID != 0 {
		token := pos
		if token == 0 {
			token = wal.Unknown
		}
		if err := s.cache.SetUserToken(ctx, userID, token); err != nil {
			owed = owed || errors.Is(err, cache.ErrUnavailable)
			if !errors.Is(err, cache.ErrUnavailable) {
				s.log.Warn("set read-your-writes token", "user_id", userID, "request_id", chat.RequestID(ctx), "err", err)
			}
		}
	}
	if invalidate != nil && invalidate(ctx, pos) != nil {
		owed = true
	}
	if owed {
		if err := s.cache.AwaitDelivery(ctx); err != nil {
			s.log.Warn("write acknowledged before Redis got its token or invalidations: other instances may serve older values until they arrive",
				"request_id", chat.RequestID(ctx), "err", err)
		}
	}
	return pos
}

// commitToken is the committed write's token (0 when unknown): the position
// recorded on the write's connection, else one read now.
func (s *Service) commitToken(ctx context.Context, committed wal.LSN) wal.LSN {
	if committed != 0 {
		return s.router.NormalizeCommitLSN(committed)
	}
	lsn, err := s.router.CommitLSN(monitor.WithQueryName(ctx, "commit_lsn"))
	if err != nil {
		s.log.Warn("write committed but its position is unknown: the user's reads stay on the primary", "request_id", chat.RequestID(ctx), "err", err)
		return 0
	}
	return lsn
}
