package cache

import (
	"sync"
	"sync/atomic"
)

// flights coalesces the fills of one data key (which names one generation)
// within this process: the first request leads, the others wait for it.
type flights struct {
	mu    sync.Mutex
	calls map[string]*flight
}

type flight struct {
	done chan struct{}
	once sync.Once
	// Set before done is closed. shared: val is a cacheable value of the
	// key's generation that waiting requests may serve.
	val    []byte
	shared bool
	// localFiller: the request holding the key's Redis lease is in this
	// process (but does not lead the flight) and will complete it.
	localFiller atomic.Bool
}

// join returns the flight of key and whether the caller leads it (and must
// call land).
func (f *flights) join(key string) (*flight, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.calls[key]; ok {
		return c, false
	}
	if f.calls == nil {
		f.calls = make(map[string]*flight)
	}
	c := &flight{done: make(chan struct{})}
	f.calls[key] = c
	return c, true
}

// complete publishes the flight's outcome; only the first call counts.
func (c *flight) complete(val []byte, shared bool) {
	c.once.Do(func() {
		c.val, c.shared = val, shared
		close(c.done)
	})
}

// land completes the flight (if the lease holder has not) and retires it.
func (f *flights) land(key string, c *flight, val []byte, shared bool) {
	c.complete(val, shared)
	f.mu.Lock()
	if f.calls[key] == c {
		delete(f.calls, key)
	}
	f.mu.Unlock()
}
