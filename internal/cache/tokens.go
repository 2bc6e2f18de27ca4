package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/internal/wal"
)

// Read-your-writes tokens: after a user's write commits, the caller records
// the WAL position it captured (pg_current_wal_insert_lsn() read after the
// commit; wal.Unknown when it could not be read). A later read by the user
// may use a replica only if the replica has replayed that position. Tokens
// live in the user's record in Redis ({user:7}:gen, fields t and x), so every
// instance sees them, and are only ever raised.
//
// A token Redis does not have is not proof that there was no write: Redis
// may have been unreachable (the read cannot ask), or lost the record
// (eviction, restart, a new epoch after an outage). So UserToken trusts the
// absence of a token only in a record older than TokenTTL — any write before
// it would have expired by now — and in a younger record uses its floor, a
// primary position read after the record was made; when it cannot ask Redis
// at all, the position is unknown (ErrUnavailable) and the caller must read
// from the primary.

// SetUserToken raises the user's token to lsn (a lower position is ignored
// while the token lives; 0 counts as wal.Unknown) and extends it to at
// least TokenTTL. An error wrapping ErrUnavailable means Redis did not get
// it: it is queued for Run to deliver, and the caller must AwaitDelivery
// before acknowledging the write.
func (c *Cache) SetUserToken(ctx context.Context, userID int64, lsn wal.LSN) error {
	if lsn == 0 {
		lsn = wal.Unknown
	}
	if c.client == nil {
		return fmt.Errorf("%w: no Redis configured", ErrUnavailable)
	}
	if !c.br.allow() {
		c.tokensOwed.add(userID, lsn)
		c.m.pendingTokens.Set(float64(c.tokensOwed.size()))
		return fmt.Errorf("%w: token queued (breaker open)", ErrUnavailable)
	}
	if err := c.setToken(ctx, userID, lsn); err != nil {
		c.tokensOwed.add(userID, lsn)
		c.m.pendingTokens.Set(float64(c.tokensOwed.size()))
		return fmt.Errorf("%w: set token: %w", ErrUnavailable, err)
	}
	return nil
}

func (c *Cache) setToken(ctx context.Context, userID int64, lsn wal.LSN) error {
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.OpTimeout)
	defer cancel()
	err := setTokenScript.Run(octx, c.client, []string{c.ks.gen(scopeUser, userID)},
		lsn.String(), c.tokenTTLms, c.genTTLMs, c.writeEpoch(ctx)).Err()
	c.observe(ctx, "token", err)
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	return err
}

// UserToken returns the position of the user's last write for routing their
// read: ok = false when they made none within TokenTTL. The position may be
// the user's record's floor (see above) rather than a write's: either way a
// replica that has replayed it has every write of the user. An error
// wrapping ErrUnavailable means the position is unknown (Redis unreachable,
// timed out, breaker open, no current epoch, or a young record whose floor
// could not be read): read from the primary. A stored token that is not a
// position reads as wal.Unknown.
func (c *Cache) UserToken(ctx context.Context, userID int64) (lsn wal.LSN, ok bool, err error) {
	if c.client == nil {
		return 0, false, fmt.Errorf("%w: no Redis configured", ErrUnavailable)
	}
	if !c.br.allow() {
		return 0, false, fmt.Errorf("%w: breaker open", ErrUnavailable)
	}
	epoch, current := c.currentEpoch(ctx)
	if !current {
		return 0, false, fmt.Errorf("%w: no current cache epoch", ErrUnavailable)
	}
	key := c.ks.gen(scopeUser, userID)
	octx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout)
	r, err := getTokenScript.Run(octx, c.client, []string{key}, epoch, c.tokenTTLms, c.genTTLMs).Slice()
	cancel()
	c.observe(ctx, "token", err)
	switch {
	case err != nil:
		return 0, false, fmt.Errorf("%w: get token: %w", ErrUnavailable, err)
	case len(r) == 0:
		c.expireView(epoch)
		return 0, false, fmt.Errorf("%w: a newer cache epoch", ErrUnavailable)
	case len(r) != 4:
		return 0, false, fmt.Errorf("%w: get token: unexpected reply %v", ErrUnavailable, r)
	}
	if t, has := r[0].(string); has {
		if lsn, err = wal.Parse(t); err != nil || lsn == 0 {
			lsn = wal.Unknown
		}
		ok = true
	}
	if young, _ := r[1].(int64); young == 0 {
		return lsn, ok, nil
	}
	var floor wal.LSN
	if f, has := r[2].(string); has {
		if floor, err = wal.Parse(f); err != nil {
			floor = wal.Unknown
		}
	} else {
		created, _ := r[3].(string)
		if floor, err = c.establishFloor(ctx, key, created); err != nil {
			return 0, false, err
		}
	}
	return max(lsn, floor, 1), true, nil
}

// replayTokens delivers the queued tokens; it reports whether none is left.
func (c *Cache) replayTokens(ctx context.Context) bool {
	for userID, lsn := range c.tokensOwed.list() {
		if err := c.setToken(ctx, userID, lsn); err != nil {
			break
		}
		c.tokensOwed.done(userID, lsn)
	}
	n := c.tokensOwed.size()
	c.m.pendingTokens.Set(float64(n))
	return n == 0
}

// pendingTokens holds the tokens that did not reach Redis, per user the
// highest.
type pendingTokens struct {
	mu sync.Mutex
	m  map[int64]wal.LSN
}

func (p *pendingTokens) add(userID int64, lsn wal.LSN) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[int64]wal.LSN)
	}
	if cur, ok := p.m[userID]; !ok || lsn > cur {
		p.m[userID] = lsn
	}
}

func (p *pendingTokens) list() map[int64]wal.LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[int64]wal.LSN, len(p.m))
	for k, v := range p.m {
		out[k] = v
	}
	return out
}

// done removes a delivered token unless a higher one was queued meanwhile.
func (p *pendingTokens) done(userID int64, lsn wal.LSN) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m[userID] == lsn {
		delete(p.m, userID)
	}
}

func (p *pendingTokens) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m)
}
