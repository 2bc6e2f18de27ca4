package cache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/internal/wal"
)

// InvalidateConversation moves the conversation and each member's
// conversation list to a new generation, raising their write position to
// lsn (the position captured after the commit; 0 or wal.Unknown if unknown,
// which restricts fills of these owners to the primary).
// Call it after every committed write that changes what the conversation's
// cached values or its members' lists show (a send, a new conversation, a
// membership change), before acknowledging the write, whether or not the
// rollout currently enables the cache. One pipelined round trip. If Redis
// cannot be reached the bumps are queued for Run to replay, this instance
// bypasses the cache for these owners until then, and the error wraps
// ErrUnavailable: call AwaitDelivery before acknowledging the write.
func (c *Cache) InvalidateConversation(ctx context.Context, convID int64, memberIDs []int64, lsn wal.LSN) error {
	keys := make([]string, 0, 1+len(memberIDs))
	keys = append(keys, c.ks.gen(scopeConversation, convID))
	for _, id := range memberIDs {
		keys = append(keys, c.ks.gen(scopeUser, id))
	}
	c.m.invalidations.WithLabelValues("conversation").Inc()
	c.m.invalidations.WithLabelValues("user").Add(float64(len(memberIDs)))
	return c.invalidate(ctx, keys, c.writePosition(lsn))
}

// InvalidateUser moves one user's values (conversation list, unread counts)
// to a new generation: call it after a write that changes only that user's
// view, e.g. advancing their read marker. Errors as InvalidateConversation.
func (c *Cache) InvalidateUser(ctx context.Context, userID int64, lsn wal.LSN) error {
	c.m.invalidations.WithLabelValues("user").Inc()
	return c.invalidate(ctx, []string{c.ks.gen(scopeUser, userID)}, c.writePosition(lsn))
}

// writePosition is the position recorded for a write at lsn: wal.Unknown
// for an unknown one (0).
func (c *Cache) writePosition(lsn wal.LSN) wal.LSN {
	if lsn == 0 {
		return wal.Unknown
	}
	return lsn
}

func (c *Cache) invalidate(ctx context.Context, keys []string, pos wal.LSN) error {
	if c.client == nil {
		return nil
	}
	if !c.br.allow() {
		// On a Redis Cluster the breaker opens when one node fails, but the
		// other nodes still serve their owners' values to every instance:
		// a bump queued here for an owner on a live node would leave those
		// values to be read after the write is acknowledged. So on a
		// cluster the bumps are tried anyway (one pipelined round trip, as
		// when the breaker is closed) and only those that fail are queued.
		if _, cluster := c.client.(*redis.ClusterClient); !cluster {
			c.queue(keys, pos)
			return fmt.Errorf("%w: %d invalidations queued (breaker open)", ErrUnavailable, len(keys))
		}
	}
	// The write is committed: finish the invalidation even if the client
	// went away.
	ctx = context.WithoutCancel(ctx)
	positions := make([]wal.LSN, len(keys))
	for i := range positions {
		positions[i] = pos
	}
	failed := c.bump(ctx, keys, positions)
	if len(failed) > 0 {
		fk := make([]string, len(failed))
		for i, j := range failed {
			fk[i] = keys[j]
		}
		c.queue(fk, pos)
		return fmt.Errorf("%w: %d of %d invalidations queued", ErrUnavailable, len(failed), len(keys))
	}
	return nil
}

// bump runs bumpScript for each key in one pipeline and returns the indexes
// of the keys it could not bump.
func (c *Cache) bump(ctx context.Context, keys []string, positions []wal.LSN) []int {
	// Budget: a round trip plus the server time of large fan-outs.
	octx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout+time.Duration(len(keys))*20*time.Microsecond)
	defer cancel()
	idx := make([]int, len(keys))
	for i := range idx {
		idx[i] = i
	}
	epoch := c.writeEpoch(ctx)
	failed, noScript, err := c.bumpOnce(octx, keys, positions, idx, epoch)
	if noScript { // a new or flushed Redis: load the scripts, retry once
		if err = loadScripts(octx, c.client); err == nil {
			failed, _, err = c.bumpOnce(octx, keys, positions, failed, epoch)
		}
	}
	c.observe(ctx, "invalidate", err)
	return failed
}

// bumpOnce pipelines the bumps of keys[idx...] and returns the failed
// indexes, whether any failed with NOSCRIPT, and the first error.
func (c *Cache) bumpOnce(ctx context.Context, keys []string, positions []wal.LSN, idx []int, epoch string) (failed []int, noScript bool, err error) {
	cmds := make([]*redis.Cmd, len(idx))
	_, err = c.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, j := range idx {
			cmds[i] = bumpScript.EvalSha(ctx, p, []string{keys[j]}, positions[j].String(), c.genTTLMs, epoch)
		}
		return nil
	})
	for i, cmd := range cmds {
		if e := cmd.Err(); e != nil {
			failed = append(failed, idx[i])
			noScript = noScript || isNoScript(e)
		}
	}
	return failed, noScript, err
}

func (c *Cache) queue(keys []string, pos wal.LSN) {
	if c.pending.add(keys, pos, c.cfg.MaxPending, c.cfg.TTL) {
		c.forceEpoch.Store(true)
		c.log.Error("too many invalidations waiting for Redis: this instance bypasses the cache until every entry cached before now has expired, and starts a new cache epoch when Redis answers",
			"max_pending", c.cfg.MaxPending, "ttl", c.cfg.TTL)
	}
	c.m.pending.Set(float64(c.pending.size()))
}

// replay delivers the queued tokens and bumps; it reports whether nothing
// is left.
func (c *Cache) replay(ctx context.Context) bool {
	if !c.replayTokens(ctx) {
		return false
	}
	keys, positions := c.pending.list()
	const chunk = 1000
	for start := 0; start < len(keys); start += chunk {
		end := min(start+chunk, len(keys))
		failed := c.bump(ctx, keys[start:end], positions[start:end])
		bad := make(map[int]bool, len(failed))
		for _, j := range failed {
			bad[j] = true
		}
		for j := start; j < end; j++ {
			if !bad[j-start] {
				c.pending.done(keys[j], positions[j])
			}
		}
		if len(failed) > 0 {
			break
		}
	}
	c.m.pending.Set(float64(c.pending.size()))
	if len(keys) > 0 && c.pending.size() == 0 {
		c.log.Info("queued cache invalidations replayed", "owners", len(keys))
	}
	return c.pending.size() == 0
}

// pendingSet holds generation bumps that did not reach Redis, and while a
// bump was lost (queue full) the time until which everything is bypassed.
type pendingSet struct {
	active    atomic.Int64 // len(bumps), plus 1 while lostUntil is set: a lock-free "empty" check
	mu        sync.Mutex
	bumps     map[string]wal.LSN // generation key → position to raise it to
	lostUntil time.Time
}

func (p *pendingSet) refresh() {
	n := int64(len(p.bumps))
	if !p.lostUntil.IsZero() {
		n++
	}
	p.active.Store(n)
}

// blocks reports whether requests for the owner must bypass the cache.
func (p *pendingSet) blocks(genKey string) bool {
	if p.active.Load() == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.lostUntil.IsZero() {
		if time.Now().Before(p.lostUntil) {
			return true
		}
		p.lostUntil = time.Time{}
		p.refresh()
	}
	_, ok := p.bumps[genKey]
	return ok
}

// add queues bumps; it reports whether the queue overflowed, in which case
// everything is bypassed for ttl.
func (p *pendingSet) add(keys []string, pos wal.LSN, limit int, ttl time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bumps == nil {
		p.bumps = make(map[string]wal.LSN)
	}
	overflow := false
	for _, k := range keys {
		if cur, ok := p.bumps[k]; ok {
			if pos > cur {
				p.bumps[k] = pos
			}
			continue
		}
		if len(p.bumps) >= limit {
			overflow = true
			continue
		}
		p.bumps[k] = pos
	}
	if overflow {
		p.lostUntil = time.Now().Add(ttl)
	}
	p.refresh()
	return overflow
}

func (p *pendingSet) list() (keys []string, positions []wal.LSN) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, v := range p.bumps {
		keys = append(keys, k)
		positions = append(positions, v)
	}
	return keys, positions
}

// done removes a replayed bump unless a newer one was queued meanwhile.
func (p *pendingSet) done(key string, pos wal.LSN) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bumps[key] == pos {
		delete(p.bumps, key)
		p.refresh()
	}
}

func (p *pendingSet) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.bumps)
}
