package cache

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/stack"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// stopRedis stops the stack's Redis and restarts it when the test ends
// (tests share the stack). It returns the restart function for tests that
// restart it themselves.
func stopRedis(t *testing.T) (restart func()) {
	t.Helper()
	s := stacktest.ForTest(t)
	if err := s.StopComponent(testCtx(t), "redis"); err != nil {
		t.Fatalf("stop redis: %v", err)
	}
	var once sync.Once
	restart = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := stack.Up(ctx, stack.Config{DataDir: s.Dir}); err != nil {
				t.Errorf("restart redis: %v", err)
			}
		})
	}
	t.Cleanup(restart)
	return restart
}

// work stands in for a database query in the latency comparison.
func work(context.Context, Fill) ([]byte, bool, error) {
	time.Sleep(200 * time.Microsecond)
	return []byte("from-db"), true, nil
}

func p95(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)*95/100]
}

// Redis stops: every request still succeeds via the database, the breaker
// opens quickly and then costs nothing measurable; writes made meanwhile are
// not served stale; Redis returns: the cache is used again within seconds.
func TestRedisDownFailsOpen(t *testing.T) {
	c := newCache(t, Config{ProbeInterval: 100 * time.Millisecond, OpTimeout: 100 * time.Millisecond})
	ctx := testCtx(t)
	warm := ConversationKey(300, KindHistory, "")
	get(t, c, warm, newFill("cached-before-outage", true).fn)
	if _, r := get(t, c, warm, work); r != ResultHit {
		t.Fatalf("warm-up: %v", r)
	}

	restart := stopRedis(t)
	stopped := time.Now()

	// 100 concurrent requests: all served by the fill. Those in flight when
	// Redis went away pay one failed operation each (bounded by OpTimeout).
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[Result]int{}
	var slowest time.Duration
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := time.Now()
			v, r, err := c.GetOrFill(ctx, "test", ConversationKey(int64(301+i%10), KindHistory, ""), work)
			d := time.Since(s)
			if err != nil || string(v) != "from-db" {
				t.Errorf("request during outage = %q, %v", v, err)
			}
			mu.Lock()
			results[r]++
			slowest = max(slowest, d)
			mu.Unlock()
		}()
	}
	wg.Wait()
	openAfter := time.Since(stopped)
	t.Logf("100 concurrent requests with Redis down: all served in %v (slowest %v), results %v",
		openAfter.Round(time.Millisecond), slowest.Round(time.Microsecond), results)
	if c.Up() {
		t.Fatalf("breaker still closed after 100 failed requests")
	}
	if limit := c.cfg.OpTimeout + 100*time.Millisecond; slowest > limit { // generous for -race on 2 cores
		t.Errorf("slowest request during the outage took %v, want < %v", slowest, limit)
	}
	// The next requests do not touch Redis at all.
	for i := range 10 {
		if _, r, _ := c.GetOrFill(ctx, "test", ConversationKey(int64(301+i), KindHistory, ""), work); r != ResultBypass {
			t.Errorf("request after the breaker opened: %v, want bypass", r)
		}
	}

	// With the breaker open, the cache adds (almost) nothing per request.
	const n = 300
	base, through := make([]time.Duration, n), make([]time.Duration, n)
	for i := range n {
		s := time.Now()
		if _, _, err := work(ctx, Fill{}); err != nil {
			t.Fatal(err)
		}
		base[i] = time.Since(s)
		s = time.Now()
		_, r, err := c.GetOrFill(ctx, "test", ConversationKey(int64(i), KindHistory, ""), work)
		through[i] = time.Since(s)
		if err != nil || r != ResultBypass {
			t.Fatalf("open breaker: %v, %v", r, err)
		}
	}
	pb, pt := p95(base), p95(through)
	t.Logf("p95 with breaker open: %v; database-only baseline: %v; added %v", pt, pb, pt-pb)
	if pt-pb > 5*time.Millisecond {
		t.Errorf("breaker open adds %v at p95 (baseline %v), want well under 5ms", pt-pb, pb)
	}

	// A write while Redis is down is queued; this instance bypasses the owner.
	if err := c.InvalidateConversation(ctx, 300, []int64{7}, pos("0/900")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("InvalidateConversation with Redis down = %v, want ErrUnavailable", err)
	}
	if c.pending.size() != 2 {
		t.Errorf("pending invalidations = %d, want 2", c.pending.size())
	}
	// Tokens: queued, and every user's position is unknown (this one's and
	// one who wrote through another instance alike).
	if err := c.SetUserToken(ctx, 7, pos("0/900")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("SetUserToken with Redis down = %v, want ErrUnavailable", err)
	}
	for _, user := range []int64{7, 8} {
		if _, _, err := c.UserToken(ctx, user); !errors.Is(err, ErrUnavailable) {
			t.Errorf("UserToken(%d) with Redis down = %v, want ErrUnavailable", user, err)
		}
	}

	restart()
	restarted := time.Now()
	deadline := restarted.Add(10 * time.Second)
	for !c.Up() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !c.Up() {
		t.Fatal("breaker still open 10 s after Redis came back")
	}
	t.Logf("cache in use again %v after Redis restarted", time.Since(restarted).Round(time.Millisecond))
	if n := c.pending.size(); n != 0 {
		t.Errorf("%d invalidations still pending after recovery", n)
	}
	f := newFill("after", true)
	get(t, c, warm, f.fn)
	if v, r := get(t, c, warm, f.fn); v != "after" || r != ResultHit {
		t.Errorf("after recovery: %q, %v; want after, hit", v, r)
	}
	if got := f.last.Load().MinLSN; got != pos("0/900") {
		t.Errorf("replayed invalidation left MinLSN %q, want 0/900", got)
	}
	// The queued token was delivered to the restarted Redis.
	if lsn, ok, err := c.UserToken(ctx, 7); err != nil || !ok || lsn != pos("0/900") {
		t.Errorf("UserToken after recovery = %q, %v, %v; want 0/900", lsn, ok, err)
	}
}

// Redis up but one invalidation lost (timeout): the owner is bypassed on
// this instance until Run replays it, so the writer reads its write.
func TestLostInvalidationReplayed(t *testing.T) {
	c := newCache(t, Config{ProbeInterval: 50 * time.Millisecond})
	key := ConversationKey(400, KindHistory, "")
	get(t, c, key, newFill("old", true).fn)
	c.queue([]string{c.ks.gen(scopeConversation, 400)}, pos("0/77")) // as if the pipeline timed out
	f := newFill("new", true)
	if v, r := get(t, c, key, f.fn); v != "new" || r != ResultBypass {
		t.Errorf("owner with a queued invalidation: %q, %v; want new, bypass", v, r)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.pending.size() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if v, r := get(t, c, key, f.fn); v != "new" || r != ResultMiss {
		t.Errorf("after replay: %q, %v; want new, miss", v, r)
	}
}

// A hung Redis (CLIENT PAUSE: connections accepted, nothing answered) costs
// each request at most OpTimeout until the breaker opens, then nothing.
func TestRedisHungTimesOut(t *testing.T) {
	const opTimeout = 30 * time.Millisecond
	c := newCache(t, Config{OpTimeout: opTimeout, ProbeInterval: 100 * time.Millisecond})
	ctx := testCtx(t)
	key := ConversationKey(500, KindHistory, "")
	get(t, c, key, newFill("v", true).fn)

	admin := newClient(t)
	const pause = 1500 * time.Millisecond
	if err := admin.Do(ctx, "CLIENT", "PAUSE", pause.Milliseconds(), "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	var lat []time.Duration
	results := map[Result]int{}
	for range 20 {
		s := time.Now()
		v, r, err := c.GetOrFill(ctx, "test", key, work)
		lat = append(lat, time.Since(s))
		results[r]++
		if err != nil || string(v) != "from-db" {
			t.Fatalf("request with Redis hung = %q, %v", v, err)
		}
	}
	if d := time.Since(paused); d > pause {
		t.Fatalf("the loop took %v, longer than the %v pause it measures", d, pause)
	}
	t.Logf("Redis hung: results %v, latencies %v", results, lat)
	if results[ResultError] > c.cfg.BreakerFailures+1 || results[ResultBypass] < 20-c.cfg.BreakerFailures-1 {
		t.Errorf("breaker did not open after %d timeouts: %v", c.cfg.BreakerFailures, results)
	}
	for i, d := range lat {
		if d > opTimeout+100*time.Millisecond { // generous for -race on 2 cores
			t.Errorf("request %d took %v with a %v Redis budget", i, d, opTimeout)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !c.Up() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !c.Up() {
		t.Fatal("breaker still open after the pause ended")
	}
	t.Logf("cache in use again %v after the pause began (pause %v)", time.Since(paused).Round(time.Millisecond), pause)
}
