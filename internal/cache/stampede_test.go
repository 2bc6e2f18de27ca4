package cache

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// 50 concurrent requests for a cold key, spread over two instances, fill it
// once: the instances coordinate by the Redis lease, requests of one
// instance by the single flight. Every request that did not run the fill is
// a hit (it got another request's value), every one that did is a miss:
// hits = 50 − fills exactly, whatever the case allows for fills.
func TestStampedeFillsOnce(t *testing.T) {
	prefix := testPrefix()
	a := newCache(t, Config{Prefix: prefix})
	b := newCache(t, Config{Prefix: prefix})
	tests := []struct {
		name      string
		fillTime  time.Duration
		maxFills  int64
		instances []*Cache
	}{
		// Within one instance the single flight makes it exactly one fill.
		{"one instance", 20 * time.Millisecond, 1, []*Cache{a}},
		// Across instances the other one waits LeaseWait for the value; on a
		// loaded machine its poll can overrun the fill, so allow one more.
		{"two instances", 20 * time.Millisecond, 2, []*Cache{a, b}},
		// Slower than LeaseWait: the other instance's requests give up
		// waiting and fill themselves, about once per instance; goroutines
		// delayed past a flight whose value was not stored (no lease) may
		// start one more. The point: 50 requests collapse to a handful.
		{"fill slower than the lease wait", 120 * time.Millisecond, 4, []*Cache{a, b}},
	}
	// Open each instance's Redis connections first: 50 cold dials at once
	// under -race can overrun the 30 ms operation budget (ResultError), which
	// is not what this test is about, and a subtest run alone starts cold.
	warm := func(context.Context, Fill) ([]byte, bool, error) { return []byte("w"), true, nil }
	wctx := testCtx(t)
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Go(func() {
			_, _, _ = []*Cache{a, b}[g%2].GetOrFill(wctx, "test", ConversationKey(99, KindHistory, ""), warm)
		})
	}
	wg.Wait()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			key := ConversationKey(int64(100+i), KindHistory, "")
			var fills atomic.Int64
			fill := func(context.Context, Fill) ([]byte, bool, error) {
				fills.Add(1)
				time.Sleep(tt.fillTime)
				return []byte("page"), true, nil
			}
			var wg sync.WaitGroup
			var hits, misses atomic.Int64
			start := make(chan struct{})
			for g := range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					v, r, err := tt.instances[g%len(tt.instances)].GetOrFill(ctx, "test", key, fill)
					if err != nil || string(v) != "page" {
						t.Errorf("GetOrFill = %q, %v", v, err)
					}
					switch r {
					case ResultHit:
						hits.Add(1)
					case ResultMiss:
						misses.Add(1)
					default:
						t.Errorf("result %v", r)
					}
				}()
			}
			close(start)
			wg.Wait()
			t.Logf("fills %d, hits %d, misses %d", fills.Load(), hits.Load(), misses.Load())
			if n := fills.Load(); n < 1 || n > tt.maxFills {
				t.Errorf("fill ran %d times, want 1..%d", n, tt.maxFills)
			}
			if h, m, f := hits.Load(), misses.Load(), fills.Load(); m != f || h != 50-f {
				t.Errorf("%d hits and %d misses for %d fills, want %d hits and %d misses", h, m, f, 50-f, f)
			}
			if _, r := get(t, a, key, fill); r != ResultHit {
				t.Errorf("after the stampede: %v, want hit", r)
			}
		})
	}
}

// A request whose fill is not cacheable does not make the requests waiting
// on it fail or serve its value: they fill themselves.
func TestSharedFillNotCacheable(t *testing.T) {
	c := newCache(t, Config{})
	ctx := testCtx(t)
	key := ConversationKey(200, KindHistory, "")
	var fills atomic.Int64
	fill := func(context.Context, Fill) ([]byte, bool, error) {
		fills.Add(1)
		time.Sleep(10 * time.Millisecond)
		return []byte("p"), false, nil
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, r, err := c.GetOrFill(ctx, "test", key, fill)
			if err != nil || string(v) != "p" || r != ResultMiss {
				t.Errorf("GetOrFill = %q, %v, %v; want p, miss", v, r, err)
			}
		}()
	}
	wg.Wait()
	if n := fills.Load(); n < 2 {
		t.Errorf("fills = %d; a non-cacheable value must not be shared", n)
	}
}
