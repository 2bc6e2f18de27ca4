package chatsvc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/parley-chat/parley/internal/cache"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/monitor"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/wal"
)

// Every write runs detached from its client (writeContext): a client that
// hangs up does not cut it between its COMMIT and its acknowledgement, and
// its database work is bounded by the budget. When the COMMIT was sent and
// never answered (postgres.ErrCommitUnknown) the write may have committed:
// it is acknowledged as if it had — the user's token raised to a position
// read now (or wal.Unknown), what it would have changed invalidated — and
// answered 503, so that the client retries (a send with its Idempotency-Key
// then finds its row, or makes it).

// CreateUser stores a user and its bearer token. Nothing cached can show a
// new user. The new user's stored token is their creation: it starts their
// record in Redis, so that their reads know from the start that no other
// write of theirs can be missing (cache.UserToken); the returned token lets
// a client read the user back from anywhere.
func (s *Service) CreateUser(ctx context.Context, handle, displayName string) (chat.Ack[chat.NewUser], error) {
	wctx, cancel := s.writeContext(ctx)
	defer cancel()
	u, token, pos, err := s.store.CreateUser(monitor.WithQueryName(wctx, "create_user"), handle, displayName)
	if err != nil {
		return chat.Ack[chat.NewUser]{}, DomainError(wctx, err)
	}
	tok, err := s.acknowledge(ctx, u.ID, pos, nil)
	if err != nil {
		_ = s.undelivered(ctx, err, false) // a retry would find the handle taken
	}
	return chat.Ack[chat.NewUser]{Value: chat.NewUser{User: u, Token: token}, Token: tok}, nil
}

// CreateConversation stores a conversation of u and memberIDs; every
// member's list changes.
func (s *Service) CreateConversation(ctx context.Context, u chat.User, title string, memberIDs []int64) (chat.Ack[chat.Conversation], error) {
	wctx, cancel := s.writeContext(ctx)
	defer cancel()
	c, pos, err := s.store.CreateConversation(monitor.WithQueryName(wctx, "create_conversation"), u.ID, title, memberIDs)
	if errors.Is(err, postgres.ErrCommitUnknown) {
		_, _ = s.acknowledge(ctx, u.ID, 0, func(ctx context.Context, pos wal.LSN) error {
			var errs []error
			for _, id := range append([]int64{u.ID}, memberIDs...) {
				errs = append(errs, s.cache.InvalidateUser(ctx, id, pos))
			}
			return errors.Join(errs...)
		})
	}
	if err != nil {
		return chat.Ack[chat.Conversation]{}, DomainError(wctx, err)
	}
	token, err := s.acknowledge(ctx, u.ID, pos, func(ctx context.Context, pos wal.LSN) error {
		return s.cache.InvalidateConversation(ctx, c.ID, c.MemberIDs, pos)
	})
	if err != nil {
		_ = s.undelivered(ctx, err, false) // a retry would make a second conversation
	}
	return chat.Ack[chat.Conversation]{Value: c, Token: token}, nil
}

// Send stores a message from u (idempotent with a key). The conversation
// and every member's list and counts change. A replayed send is
// acknowledged too: the first attempt may have committed and died before
// invalidating.
func (s *Service) Send(ctx context.Context, u chat.User, req chat.SendRequest) (chat.Ack[chat.SendResult], error) {
	req.SenderID = u.ID
	wctx, cancel := s.writeContext(ctx)
	defer cancel()
	res, pos, err := s.store.SendMessage(monitor.WithQueryName(wctx, "send_message"), req)
	invalidate := func(ctx context.Context, pos wal.LSN) error {
		return s.cache.InvalidateConversation(ctx, req.ConversationID, res.MemberIDs, pos)
	}
	if errors.Is(err, postgres.ErrCommitUnknown) {
		_, _ = s.acknowledge(ctx, u.ID, 0, invalidate)
	}
	if err != nil {
		return chat.Ack[chat.SendResult]{}, DomainError(wctx, err)
	}
	token, err := s.acknowledge(ctx, u.ID, pos, invalidate)
	if err != nil {
		if err := s.undelivered(ctx, err, req.IdempotencyKey != ""); err != nil {
			return chat.Ack[chat.SendResult]{}, err
		}
	}
	return chat.Ack[chat.SendResult]{Value: res, Token: token}, nil
}

// MarkRead moves u's read marker forward and returns the conversation's
// unread count. Only the reader's view changes: their list and counts.
func (s *Service) MarkRead(ctx context.Context, u chat.User, convID, messageID int64) (chat.Ack[int64], error) {
	wctx, cancel := s.writeContext(ctx)
	defer cancel()
	n, pos, err := s.store.MarkRead(monitor.WithQueryName(wctx, "mark_read"), u.ID, convID, messageID)
	invalidate := func(ctx context.Context, pos wal.LSN) error {
		return s.cache.InvalidateUser(ctx, u.ID, pos)
	}
	if errors.Is(err, postgres.ErrCommitUnknown) {
		_, _ = s.acknowledge(ctx, u.ID, 0, invalidate)
	}
	if err != nil {
		return chat.Ack[int64]{}, DomainError(wctx, err)
	}
	token, err := s.acknowledge(ctx, u.ID, pos, invalidate)
	if err != nil {
		if err := s.undelivered(ctx, err, true); err != nil { // the marker only moves forward
			return chat.Ack[int64]{}, err
		}
	}
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
// That wait is at most ~1 s, at the start of an outage.
//
// The epoch lapses only if no instance refreshes it. An instance cut off
// from a Redis that the others still reach (a partition, its own link
// dropping or slowing its calls) cannot tell that from an outage by itself:
// its wait would end as if the epoch had lapsed while the others keep it —
// and keep serving what this write changed. So a wait that ends that way
// asks the database (witness.go) whether another instance reached Redis
// within the last 0.9 × EpochTTL; if one did (or the question cannot be
// answered), the write is not safely acknowledged: acknowledge returns
// errUndelivered, and the caller answers 503 when the client can retry
// without harm (a send with an Idempotency-Key, a mark-read) — the retry,
// on an instance that reaches Redis, delivers it — or acknowledges with a
// warning when a retry would duplicate the write. It returns the token (0
// when unknown).
func (s *Service) acknowledge(ctx context.Context, userID int64, committed wal.LSN, invalidate func(ctx context.Context, pos wal.LSN) error) (wal.LSN, error) {
	// The write is committed: finish even if the client has gone.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.WriteTimeout)
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
	if !owed {
		return pos, nil
	}
	outcome, err := s.cache.Await(ctx)
	switch outcome {
	case cache.Delivered:
		return pos, nil
	case cache.Lapsed:
		elsewhere, werr := s.redisReachedElsewhere(ctx)
		if werr == nil && !elsewhere {
			return pos, nil // nobody reaches Redis: the epoch has lapsed everywhere
		}
		err = werr
		if elsewhere {
			err = errors.New("another instance reached Redis within the epoch's life: this one alone is cut off")
		}
	}
	return pos, fmt.Errorf("%w: %w", errUndelivered, err)
}

// errUndelivered: a committed write whose token or invalidations did not
// reach Redis while the cache epoch may still live on other instances.
var errUndelivered = errors.New("the write's token or invalidations did not reach Redis")

// undelivered answers a write that acknowledge could not safely
// acknowledge (err wraps errUndelivered): 503 when the client can retry it
// without harm (retryable), else the acknowledgement with a warning.
func (s *Service) undelivered(ctx context.Context, err error, retryable bool) error {
	if retryable {
		s.log.Warn("write stored but not acknowledged: its token or invalidations did not reach Redis, which other instances still use; answered 503",
			"request_id", chat.RequestID(ctx), "err", err)
		return &chat.Error{Code: chat.EUNAVAILABLE,
			Message: "the write is stored but this instance cannot reach the cache; retry (with the same Idempotency-Key)", Err: err}
	}
	s.log.Warn("write acknowledged before Redis got its token or invalidations: other instances may serve older values until they arrive",
		"request_id", chat.RequestID(ctx), "err", err)
	return nil
}

// commitToken is the committed write's token (0 when unknown): the position
// recorded on the write's connection, else one read now.
func (s *Service) commitToken(ctx context.Context, committed wal.LSN) wal.LSN {
	if committed != 0 {
		return s.router.NormalizeCommitLSN(committed)
	}
	// Bounded: a primary that cannot answer now leaves the token unknown
	// (the user's reads stay on the primary) rather than the write waiting.
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	lsn, err := s.router.CommitLSN(monitor.WithQueryName(ctx, "commit_lsn"))
	if err != nil {
		s.log.Warn("write committed but its position is unknown: the user's reads stay on the primary", "request_id", chat.RequestID(ctx), "err", err)
		return 0
	}
	return lsn
}
