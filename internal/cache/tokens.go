package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/internal/wal"
)

// Read-your-writes tokens: after a user's write commits, the caller records
// the WAL position it captured (pg_current_wal_insert_lsn() read after the
// commit; wal.Unknown when it could not be read). A later read by the user
// may use a replica only if the replica has replayed that position. Tokens
// live in Redis ({user:7}:tok), so every instance sees them, and are only
// ever raised; each instance also keeps the tokens of the writes it made, for
// when Redis is unavailable.

// SetUserToken raises the user's token to lsn (a lower position is ignored;
// 0 counts as wal.Unknown) and extends its TTL to at least ttl. The token is
// always recorded on this instance; an error wrapping ErrUnavailable means
// Redis did not get it (other instances will not see it).
func (c *Cache) SetUserToken(ctx context.Context, userID int64, lsn wal.LSN, ttl time.Duration) error {
	if lsn == 0 {
		lsn = wal.Unknown
	}
	c.tokens.raise(userID, lsn, time.Now().Add(ttl))
	if !c.br.allow() {
		return ErrUnavailable
	}
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.OpTimeout)
	defer cancel()
	ms := max(ttl.Milliseconds(), 1)
	err := raiseScript.Run(octx, c.client, []string{c.ks.token(userID)}, lsn.String(), ms).Err()
	c.observe(ctx, "token", err)
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("%w: set token: %w", ErrUnavailable, err)
	}
	return nil
}

// UserToken returns the user's token: ok = false when the user wrote nothing
// within the token TTL. When err wraps ErrUnavailable the token is unknown:
// lsn and ok then come from this instance's own record only, and writes the
// user made through other instances are not included — route such a read to
// the primary (at least when ok is true, i.e. the user wrote recently). A
// value in Redis that is not a position reads as wal.Unknown.
func (c *Cache) UserToken(ctx context.Context, userID int64) (lsn wal.LSN, ok bool, err error) {
	local, lok := c.tokens.get(userID, time.Now())
	if !c.br.allow() {
		return local, lok, ErrUnavailable
	}
	octx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout)
	defer cancel()
	v, err := c.client.Get(octx, c.ks.token(userID)).Result()
	c.observe(ctx, "token", err)
	switch {
	case errors.Is(err, redis.Nil):
		return local, lok, nil
	case err != nil:
		return local, lok, fmt.Errorf("%w: get token: %w", ErrUnavailable, err)
	}
	stored, perr := wal.Parse(v)
	if perr != nil || stored == 0 {
		stored = wal.Unknown
	}
	if lok && local > stored {
		return local, true, nil
	}
	return stored, true, nil
}

// localTokens is the per-instance record of tokens, sharded to keep lock
// contention off the read path.
type localTokens struct {
	shards [32]tokenShard
}

type tokenShard struct {
	mu sync.Mutex
	m  map[int64]localToken
}

type localToken struct {
	pos     wal.LSN
	expires time.Time
}

// maxLocalTokens bounds each shard; expired records are pruned first.
const maxLocalTokensPerShard = 1 << 14

func (t *localTokens) init() {
	for i := range t.shards {
		t.shards[i].m = make(map[int64]localToken)
	}
}

func (t *localTokens) shard(userID int64) *tokenShard {
	return &t.shards[uint64(userID)%uint64(len(t.shards))]
}

func (t *localTokens) raise(userID int64, pos wal.LSN, expires time.Time) {
	s := t.shard(userID)
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.m[userID]
	if ok && time.Now().Before(cur.expires) && pos <= cur.pos {
		if expires.After(cur.expires) {
			cur.expires = expires
			s.m[userID] = cur
		}
		return
	}
	if !ok && len(s.m) >= maxLocalTokensPerShard {
		s.pruneLocked(time.Now())
		for k := range s.m { // still full: drop an arbitrary record
			if len(s.m) < maxLocalTokensPerShard {
				break
			}
			delete(s.m, k)
		}
	}
	s.m[userID] = localToken{pos: pos, expires: expires}
}

func (t *localTokens) get(userID int64, now time.Time) (wal.LSN, bool) {
	s := t.shard(userID)
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, ok := s.m[userID]
	if !ok || !now.Before(tok.expires) {
		return 0, false
	}
	return tok.pos, true
}

func (t *localTokens) prune(now time.Time) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		s.pruneLocked(now)
		s.mu.Unlock()
	}
}

func (s *tokenShard) pruneLocked(now time.Time) {
	for k, v := range s.m {
		if !now.Before(v.expires) {
			delete(s.m, k)
		}
	}
}
