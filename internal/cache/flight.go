package cache

import "sync"

// flights coalesces the fills of one data key (which names one generation)
// within this process: the first request fills, the others wait for it.
type flights struct {
	mu    sync.Mutex
	calls map[string]*flight
}

type flight struct {
	done chan struct{}
	// Set before done is closed. shared: val is a cacheable value of the
	// key's generation that waiting requests may serve.
	val    []byte
	shared bool
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

func (f *flights) land(key string, c *flight, val []byte, shared bool) {
	c.val, c.shared = val, shared
	f.mu.Lock()
	delete(f.calls, key)
	f.mu.Unlock()
	close(c.done)
}
