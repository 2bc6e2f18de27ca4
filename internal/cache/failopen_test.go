package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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

// opRecorder is a go-redis hook that sees every command a request sends:
// the requests of a test carry a counter in their context (withOps), and
// each command sent with one is counted there and checked to carry a
// deadline within the cache's per-operation budget. Which commands a
// request sends and how each is bounded are exact facts; how long they take
// on a shared machine is not, so the tests assert the former and log the
// latter.
type opRecorder struct {
	budget time.Duration // the longest deadline a request's command may carry
	mu     sync.Mutex
	bad    []string // commands sent without a deadline within budget
}

type opsKey struct{}

var handshake = map[string]bool{"hello": true, "auth": true, "select": true, "client": true}

// withOps marks ctx: commands sent with it are counted in n.
func withOps(ctx context.Context, n *atomic.Int64) context.Context {
	return context.WithValue(ctx, opsKey{}, n)
}

// newObservedCache is newCache with an opRecorder on its client.
func newObservedCache(t *testing.T, cfg Config) (*Cache, *opRecorder) {
	t.Helper()
	client := newClient(t)
	rec := &opRecorder{budget: cfg.OpTimeout}
	client.AddHook(rec)
	t.Cleanup(func() {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, b := range rec.bad {
			t.Errorf("a request's Redis command without a deadline within the %v budget: %s", cfg.OpTimeout, b)
		}
	})
	return newCacheOn(t, client, cfg), rec
}

func (r *opRecorder) check(ctx context.Context, name string) {
	n, ok := ctx.Value(opsKey{}).(*atomic.Int64)
	if !ok {
		return // the cache's own probe, or set-up
	}
	// A new connection's handshake (HELLO, and AUTH/SELECT when
	// configured) runs on the request's context, under the same deadline:
	// checked, but not one of the cache's commands.
	if !handshake[name] {
		n.Add(1)
	}
	d, ok := ctx.Deadline()
	if left := time.Until(d); !ok || left > r.budget {
		r.mu.Lock()
		r.bad = append(r.bad, fmt.Sprintf("%s (deadline set %v, %v left)", name, ok, left.Round(time.Millisecond)))
		r.mu.Unlock()
	}
}

func (r *opRecorder) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *opRecorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.check(ctx, cmd.Name())
		return next(ctx, cmd)
	}
}

func (r *opRecorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.check(ctx, fmt.Sprintf("pipeline of %d", len(cmds)))
		return next(ctx, cmds)
	}
}

// opsOf is how many Redis commands each result may cost a request while
// Redis is down or hung: a failed lookup is one (then the fill serves it),
// a bypass none.
var opsOf = map[Result]int64{ResultError: 1, ResultBypass: 0}

// work stands in for a database query in the latency comparison.
func work(context.Context, Fill) ([]byte, bool, error) {
	time.Sleep(200 * time.Microsecond)
	return []byte("from-db"), true, nil
}

func p95(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)*95/100]
}

// Redis stops: every request still succeeds via the database, paying at
// most one failed Redis command (bounded by OpTimeout) until the breaker
// opens, and none after; writes made meanwhile are not served stale; Redis
// returns: the cache is used again within seconds.
func TestRedisDownFailsOpen(t *testing.T) {
	c, _ := newObservedCache(t, Config{ProbeInterval: 100 * time.Millisecond, OpTimeout: 100 * time.Millisecond})
	ctx := testCtx(t)
	warm := ConversationKey(300, KindHistory, "")
	get(t, c, warm, newFill("cached-before-outage", true).fn)
	if _, r := get(t, c, warm, work); r != ResultHit {
		t.Fatalf("warm-up: %v", r)
	}

	restart := stopRedis(t)
	stopped := time.Now()

	// 100 concurrent requests: all served by the fill. Those in flight when
	// Redis went away pay one failed command each, bounded by OpTimeout
	// (the hook checks every command's deadline); the others none.
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[Result]int{}
	var slowest time.Duration
	for i := range 100 {
		wg.Go(func() {
			var ops atomic.Int64
			s := time.Now()
			v, r, err := c.GetOrFill(withOps(ctx, &ops), "test", ConversationKey(int64(301+i%10), KindHistory, ""), work)
			d := time.Since(s)
			if err != nil || string(v) != "from-db" {
				t.Errorf("request during outage = %q, %v", v, err)
			}
			if want, ok := opsOf[r]; !ok || ops.Load() != want {
				t.Errorf("request during outage: %v after %d Redis commands; want an error after 1 or a bypass after 0", r, ops.Load())
			}
			mu.Lock()
			results[r]++
			slowest = max(slowest, d)
			mu.Unlock()
		})
	}
	wg.Wait()
	openAfter := time.Since(stopped)
	t.Logf("100 concurrent requests with Redis down: all served in %v (slowest %v), results %v",
		openAfter.Round(time.Millisecond), slowest.Round(time.Microsecond), results)
	if c.Up() {
		t.Fatalf("breaker still closed after 100 failed requests")
	}
	if results[ResultError] < c.cfg.BreakerFailures {
		t.Errorf("%d failed lookups, yet the breaker opens after %d", results[ResultError], c.cfg.BreakerFailures)
	}

	// With the breaker open, a request sends Redis nothing: 300 bypasses,
	// no command. Their cost next to the fill alone is logged (a figure
	// for this machine; BenchmarkGetOrFillBypass measures it).
	const n = 300
	var ops atomic.Int64
	octx := withOps(ctx, &ops)
	base, through := make([]time.Duration, n), make([]time.Duration, n)
	for i := range n {
		s := time.Now()
		if _, _, err := work(ctx, Fill{}); err != nil {
			t.Fatal(err)
		}
		base[i] = time.Since(s)
		s = time.Now()
		_, r, err := c.GetOrFill(octx, "test", ConversationKey(int64(i), KindHistory, ""), work)
		through[i] = time.Since(s)
		if err != nil || r != ResultBypass {
			t.Fatalf("open breaker: %v, %v", r, err)
		}
	}
	if n := ops.Load(); n != 0 {
		t.Errorf("%d Redis commands from 300 requests with the breaker open, want 0", n)
	}
	pb, pt := p95(base), p95(through)
	t.Logf("p95 with breaker open: %v; database-only baseline: %v; added %v", pt, pb, pt-pb)

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
// each request at most OpTimeout until the breaker opens, then nothing: a
// request sends one command, with a deadline within OpTimeout, and gives up
// on it (it returns long before the pause ends); once the breaker is open,
// none.
func TestRedisHungTimesOut(t *testing.T) {
	const opTimeout = 30 * time.Millisecond
	// A long epoch: the instance's view of it stays good for the whole
	// test, so no request spends its one command on refreshing a view a
	// busy machine let lapse (that request would bypass after 1 command).
	c, _ := newObservedCache(t, Config{OpTimeout: opTimeout, ProbeInterval: 100 * time.Millisecond, EpochTTL: time.Minute})
	ctx := testCtx(t)
	key := ConversationKey(500, KindHistory, "")
	inUse(t, c, key, "v")

	admin := newClient(t)
	const pause = 1500 * time.Millisecond
	if err := admin.Do(ctx, "CLIENT", "PAUSE", pause.Milliseconds(), "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	var lat []time.Duration
	results := map[Result]int{}
	for i := range 20 {
		var ops atomic.Int64
		s := time.Now()
		v, r, err := c.GetOrFill(withOps(ctx, &ops), "test", key, work)
		d := time.Since(s)
		lat = append(lat, d)
		results[r]++
		if err != nil || string(v) != "from-db" {
			t.Fatalf("request with Redis hung = %q, %v", v, err)
		}
		if want, ok := opsOf[r]; !ok || ops.Load() != want {
			t.Errorf("request %d: %v after %d Redis commands; want an error after 1 or a bypass after 0", i, r, ops.Load())
		}
		// A timed-out command waited out its budget: Redis really was hung
		// (not refusing), so this test measures what it says.
		if r == ResultError && d < opTimeout {
			t.Errorf("request %d failed after %v, before its %v budget: Redis was not hung", i, d, opTimeout)
		}
	}
	// The pause is the bound a request without its own deadline would wait
	// for: every request returned before it ended.
	if d := time.Since(paused); d > pause {
		t.Fatalf("20 requests took %v, longer than the %v pause: a request waited for Redis", d, pause)
	}
	t.Logf("Redis hung: results %v, latencies %v", results, lat)
	if results[ResultError] > c.cfg.BreakerFailures+1 || results[ResultBypass] < 20-c.cfg.BreakerFailures-1 {
		t.Errorf("breaker did not open after %d timeouts: %v", c.cfg.BreakerFailures, results)
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

// inUse fills key with value through c until c serves it from Redis (a hit
// or a miss it stored) with an epoch in view: the premise of a test that
// then breaks Redis. A cold dial can overrun a short operation budget on a
// busy machine, and such a request bypasses Redis with no epoch in view.
func inUse(t *testing.T, c *Cache, key Key, value string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, r := get(t, c, key, newFill(value, true).fn); (r == ResultHit || r == ResultMiss) && c.view.Load() != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the cache never served from Redis")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
