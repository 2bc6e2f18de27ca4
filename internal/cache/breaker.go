package cache

import (
	"sync/atomic"
	"time"
)

// breaker stops the request path from paying Redis timeouts while Redis is
// down. It opens after threshold consecutive failures; only Run closes it,
// after Redis answers and queued invalidations are replayed, so user
// requests never probe a dead Redis. It also remembers since when Redis has
// failed without a success in between (unreachableSince), which tells a
// write waiting for its delivery when the epoch has surely lapsed.
type breaker struct {
	threshold int32
	fails     atomic.Int32
	open      atomic.Bool
	openedAt  atomic.Int64 // unix nanoseconds
	// streak is the clock reading (Cache.clock) of the first failure since
	// the last success; 0: the last operation succeeded.
	streak   atomic.Int64
	onChange func(open bool, downFor time.Duration)
}

func (b *breaker) allow() bool { return !b.open.Load() }

func (b *breaker) success() {
	if b.fails.Load() != 0 {
		b.fails.Store(0)
	}
	if b.streak.Load() != 0 {
		b.streak.Store(0)
	}
}

// failure counts a failed operation observed at now (Cache.clock, > 0).
func (b *breaker) failure(now int64) {
	b.streak.CompareAndSwap(0, now)
	if b.fails.Add(1) >= b.threshold && b.open.CompareAndSwap(false, true) {
		b.openedAt.Store(time.Now().UnixNano())
		b.onChange(true, 0)
	}
}

// unreachableSince is the clock reading of the first failure of the current
// run of failures (0: none).
func (b *breaker) unreachableSince() int64 { return b.streak.Load() }

// close is called by the prober only.
func (b *breaker) close() {
	b.fails.Store(0)
	if b.open.CompareAndSwap(true, false) {
		b.onChange(false, time.Since(time.Unix(0, b.openedAt.Load())))
	}
}
