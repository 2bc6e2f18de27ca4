package cache

import (
	"sync/atomic"
	"time"
)

// breaker stops the request path from paying Redis timeouts while Redis is
// down. It opens after threshold consecutive failures; only Run closes it,
// after a PING answers and queued invalidations are replayed, so user
// requests never probe a dead Redis.
type breaker struct {
	threshold int32
	fails     atomic.Int32
	open      atomic.Bool
	openedAt  atomic.Int64 // unix nanoseconds
	onChange  func(open bool, downFor time.Duration)
}

func (b *breaker) allow() bool { return !b.open.Load() }

func (b *breaker) success() {
	if b.fails.Load() != 0 {
		b.fails.Store(0)
	}
}

func (b *breaker) failure() {
	if b.fails.Add(1) >= b.threshold && b.open.CompareAndSwap(false, true) {
		b.openedAt.Store(time.Now().UnixNano())
		b.onChange(true, 0)
	}
}

// close is called by the prober only.
func (b *breaker) close() {
	b.fails.Store(0)
	if b.open.CompareAndSwap(true, false) {
		b.onChange(false, time.Since(time.Unix(0, b.openedAt.Load())))
	}
}
