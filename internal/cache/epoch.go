package cache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// The cache epoch (see doc.go, "Outages"): one key, {epoch}, that every
// instance refreshes every ProbeInterval and that lives EpochTTL after the
// last refresh. Every owner record carries the epoch it was made in; a
// record of an older epoch is reset when it is next touched, so nothing
// cached or recorded before a new epoch is ever used again.

// view is this instance's knowledge of the epoch: its value and until when
// (Cache.clock) it may be used. A view is good for 0.9 × EpochTTL after the
// refresh that read it was sent: while it is good, the epoch key that
// refresh extended cannot have lapsed (Redis's clock and ours run at about
// the same rate), so no newer epoch exists unless Redis lost the key
// (restart, eviction), which loses nothing an instance still owes.
type view struct {
	epoch string // decimal, as stored
	sent  int64  // clock reading when the refresh was sent
	until int64  // clock reading until which it may be used
}

// clock is monotonic nanoseconds since the cache was made (> 0).
func (c *Cache) clock() int64 { return int64(time.Since(c.born)) + 1 }

// writeEpoch is the epoch a write tags the records it makes with: the
// current one (refreshed first if the view expired), else the last one read
// ("0" before any). A write never needs a current view to be correct — a
// record of a newer epoch is bumped as it is; one made under an older epoch
// is reset by the next read, which only loses what it recorded — but with
// one its record is kept.
func (c *Cache) writeEpoch(ctx context.Context) string {
	if e, ok := c.currentEpoch(ctx); ok {
		return e
	}
	if v := c.view.Load(); v != nil {
		return v.epoch
	}
	return "0"
}

// currentEpoch returns the epoch reads may use now. When the view has
// expired (after an outage, at start) it refreshes it first — one round
// trip, shared by the requests that arrive meanwhile; ok is false when that
// fails or the breaker is open: the request must bypass Redis.
func (c *Cache) currentEpoch(ctx context.Context) (epoch string, ok bool) {
	if v := c.view.Load(); v != nil && c.clock() < v.until {
		return v.epoch, true
	}
	if !c.br.allow() {
		return "", false
	}
	if !c.refreshShared(ctx) {
		return "", false
	}
	if v := c.view.Load(); v != nil && c.clock() < v.until {
		return v.epoch, true
	}
	return "", false
}

// refreshShared refreshes the epoch once for every caller that arrives
// while a refresh is in flight; it reports whether the refresh succeeded.
func (c *Cache) refreshShared(ctx context.Context) bool {
	c.refreshing.mu.Lock()
	if fl := c.refreshing.fl; fl != nil {
		c.refreshing.mu.Unlock()
		select {
		case <-fl.done:
			return fl.err == nil
		case <-ctx.Done():
			return false
		}
	}
	fl := &refreshFlight{done: make(chan struct{})}
	c.refreshing.fl = fl
	c.refreshing.mu.Unlock()
	fl.err = c.refreshEpoch(context.WithoutCancel(ctx))
	c.refreshing.mu.Lock()
	c.refreshing.fl = nil
	c.refreshing.mu.Unlock()
	close(fl.done)
	return fl.err == nil
}

type refreshFlight struct {
	done chan struct{}
	err  error
}

type refreshGroup struct {
	mu sync.Mutex
	fl *refreshFlight
}

// refreshEpoch reads and extends the epoch (starting a new one if it
// lapsed) and stores the view.
func (c *Cache) refreshEpoch(ctx context.Context) error {
	sent := c.clock()
	octx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout)
	defer cancel()
	r, err := epochScript.Run(octx, c.client, []string{c.ks.epoch()}, c.epochTTLms).Slice()
	c.observe(ctx, "epoch", err)
	if err != nil {
		return err
	}
	if len(r) != 2 {
		return fmt.Errorf("cache epoch: unexpected reply %v", r)
	}
	e, _ := r[0].(string)
	if _, perr := strconv.ParseInt(e, 10, 64); perr != nil {
		return fmt.Errorf("cache epoch %q: %w", e, perr)
	}
	nv := &view{epoch: e, sent: sent, until: sent + c.validFor}
	for {
		old := c.view.Load()
		if old != nil && old.sent > sent {
			return nil // a later refresh already stored its view
		}
		if c.view.CompareAndSwap(old, nv) {
			if old != nil && old.epoch != e {
				c.m.epochChanges.Inc()
				c.log.Warn("cache epoch changed: everything Redis held before is ignored",
					"epoch", e, "previous", old.epoch, "started_now", r[1] == int64(1))
			}
			return nil
		}
	}
}

// newEpoch ends the current epoch and starts the next (for invalidations
// that were dropped: no record or value from before may be used again).
func (c *Cache) newEpoch(ctx context.Context) error {
	octx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout)
	err := c.client.Del(octx, c.ks.epoch()).Err()
	cancel()
	c.observe(ctx, "epoch", err)
	if err != nil {
		return err
	}
	return c.refreshEpoch(ctx)
}

// expireView drops the view of epoch e (a record of a newer epoch was seen):
// the next read refreshes it first.
func (c *Cache) expireView(e string) {
	if v := c.view.Load(); v != nil && v.epoch == e {
		c.view.CompareAndSwap(v, &view{epoch: e, sent: v.sent, until: 0})
	}
	c.kickRun()
}

func (c *Cache) kickRun() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// lapsed reports whether Redis has failed every operation of this instance
// for long enough that the epoch must have lapsed: the first failure came at
// most OpTimeout after Redis stopped answering, and the epoch lives EpochTTL
// after the last refresh it answered (10 % margin for the two clocks).
func (c *Cache) lapsed() bool {
	since := c.br.unreachableSince()
	return since != 0 && c.clock()-since >= int64(c.cfg.OpTimeout)+int64(c.cfg.EpochTTL)*11/10
}

// owes reports whether this instance holds a token or an invalidation that
// Redis has not received (or lost some: the queue overflowed).
func (c *Cache) owes() bool {
	return c.pending.size() > 0 || c.tokensOwed.size() > 0 || c.forceEpoch.Load()
}

// ErrUndelivered: AwaitDelivery's context ended while a token or an
// invalidation had still not reached Redis and the epoch had not lapsed.
var ErrUndelivered = errors.New("cache: a token or invalidation is still waiting for Redis")

// AwaitDelivery is what a write owes before it is acknowledged when its
// token or one of its invalidations could not reach Redis (SetUserToken or
// an Invalidate* returned ErrUnavailable): it waits until everything this
// instance owes Redis has been delivered (Run replays it as soon as Redis
// answers; while anyone waits it probes every 10 ms), or until Redis has
// been unreachable from here long enough that the epoch has lapsed — then
// every instance ignores what Redis held, so nothing stale can be served
// anywhere —, or until ctx ends (ErrUndelivered). Without Redis configured
// it returns at once.
func (c *Cache) AwaitDelivery(ctx context.Context) error {
	_, err := c.Await(ctx)
	return err
}

// Delivery is how AwaitDelivery's wait ended.
type Delivery int

const (
	// Delivered: Redis has everything this instance owed it.
	Delivered Delivery = iota
	// Lapsed: Redis failed every operation of this instance long enough
	// that the epoch lapsed — if no other instance refreshed it meanwhile.
	// That "if" this instance cannot see: when another instance still
	// reaches Redis (this one alone is cut off), the epoch lives on and the
	// undelivered invalidations leave older values servable there. The
	// caller must rule that out (chatsvc's witness) before acknowledging.
	Lapsed
	// Undelivered: ctx ended first (ErrUndelivered).
	Undelivered
)

// Await is AwaitDelivery, saying how the wait ended.
func (c *Cache) Await(ctx context.Context) (Delivery, error) {
	if c.client == nil {
		return Delivered, nil
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		switch {
		case !c.owes():
			c.m.deliveryWaits.WithLabelValues("delivered").Inc()
			return Delivered, nil
		case c.lapsed():
			c.m.deliveryWaits.WithLabelValues("lapsed").Inc()
			return Lapsed, nil
		}
		c.kickRun()
		select {
		case <-ctx.Done():
			c.m.deliveryWaits.WithLabelValues("timeout").Inc()
			return Undelivered, fmt.Errorf("%w: %w", ErrUndelivered, ctx.Err())
		case <-t.C:
		}
	}
}

// RedisReachedAgo is how long ago this instance last refreshed the cache
// epoch in Redis (ok false: never, or no Redis configured). Other instances
// learn from it, through the database, that Redis is reachable and the
// epoch alive (chatsvc's witness).
func (c *Cache) RedisReachedAgo() (ago time.Duration, ok bool) {
	v := c.view.Load()
	if c.client == nil || v == nil {
		return 0, false
	}
	return time.Duration(c.clock() - v.sent), true
}

// EpochTTL is the cache epoch's life after its last refresh
// (Config.EpochTTL).
func (c *Cache) EpochTTL() time.Duration { return c.cfg.EpochTTL }
