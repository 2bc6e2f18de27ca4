package cache

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// runCache is newCache whose Run the test can stop, as when the instance
// dies: what it had queued is never delivered.
func runCache(t *testing.T, cfg Config) (c *Cache, stop func()) {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = testPrefix()
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	if cfg.Position == nil {
		cfg.Position = floorAt(testFloor)
	}
	c = New(newClient(t), cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return c, stop
}

// pauseRedis hangs the stack's Redis for d (CLIENT PAUSE ALL: connections
// are accepted, nothing is answered), as a SIGSTOP would.
func pauseRedis(t *testing.T, d time.Duration) {
	t.Helper()
	if err := newClient(t).Do(testCtx(t), "CLIENT", "PAUSE", d.Milliseconds(), "ALL").Err(); err != nil {
		t.Fatal(err)
	}
}

// Redis hangs longer than the epoch's TTL while a write's invalidation
// cannot reach it, and the writer dies before it can deliver it: when Redis
// answers again, no instance serves what it held before, and a record that
// was current is reset (its write position unknown until a new floor).
func TestEpochLapseHidesOldValues(t *testing.T) {
	const epochTTL = 300 * time.Millisecond
	prefix := testPrefix()
	cfg := Config{Prefix: prefix, EpochTTL: epochTTL, OpTimeout: 30 * time.Millisecond}
	writer, stopWriter := runCache(t, cfg)
	reader, _ := runCache(t, cfg)
	ctx := testCtx(t)
	key := ConversationKey(60, KindHistory, "")
	get(t, reader, key, newFill("before", true).fn)
	if v, r := get(t, writer, key, newFill("x", true).fn); v != "before" || r != ResultHit {
		t.Fatalf("warm-up on the writer: %q, %v", v, r)
	}
	epochBefore := reader.view.Load().epoch

	pauseRedis(t, 3*epochTTL)
	paused := time.Now()
	if err := writer.InvalidateConversation(ctx, 60, nil, pos("0/6000")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("invalidation with Redis hung = %v, want ErrUnavailable", err)
	}
	// The writer acknowledges once the epoch has surely lapsed.
	if err := writer.AwaitDelivery(ctx); err != nil {
		t.Fatalf("AwaitDelivery: %v", err)
	}
	waited := time.Since(paused)
	if got := testutil.ToFloat64(writer.m.deliveryWaits.WithLabelValues("lapsed")); got != 1 {
		t.Errorf(`delivery_waits_total{outcome="lapsed"} = %v, want 1`, got)
	}
	if waited < epochTTL || waited > 3*epochTTL {
		t.Errorf("AwaitDelivery returned %v after the hang began; want between EpochTTL and the end of the hang", waited)
	}
	stopWriter() // dies with its invalidation undelivered

	f := newFill("after", true)
	for time.Since(paused) < 3*epochTTL+time.Second {
		v, r, err := reader.GetOrFill(ctx, "test", key, f.fn)
		if err != nil {
			t.Fatal(err)
		}
		if string(v) == "before" {
			t.Fatalf("%v after the hang began: the pre-outage value served (%v)", time.Since(paused).Round(time.Millisecond), r)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if v, r := get(t, reader, key, f.fn); v != "after" || r != ResultHit {
		t.Errorf("after the outage: %q, %v; want after, hit", v, r)
	}
	if e := reader.view.Load().epoch; e == epochBefore {
		t.Errorf("epoch %s unchanged after Redis hung for 3 × its TTL", e)
	}
	if got := testutil.ToFloat64(reader.m.epochChanges); got < 1 {
		t.Errorf("epoch_changes_total = %v, want ≥ 1", got)
	}
}

// Redis hangs for less than the epoch's TTL: the write's acknowledgement
// waits until its invalidation is delivered, so every instance sees it
// once Redis answers.
func TestShortHangDeliversBeforeAck(t *testing.T) {
	const epochTTL = time.Second
	prefix := testPrefix()
	cfg := Config{Prefix: prefix, EpochTTL: epochTTL, OpTimeout: 30 * time.Millisecond}
	writer, _ := runCache(t, cfg)
	reader, _ := runCache(t, cfg)
	ctx := testCtx(t)
	key := ConversationKey(61, KindHistory, "")
	get(t, reader, key, newFill("before", true).fn)

	const hang = 300 * time.Millisecond
	pauseRedis(t, hang)
	paused := time.Now()
	if err := writer.InvalidateConversation(ctx, 61, nil, pos("0/6100")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("invalidation with Redis hung = %v, want ErrUnavailable", err)
	}
	if err := writer.SetUserToken(ctx, 9, pos("0/6100")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("token with Redis hung = %v, want ErrUnavailable", err)
	}
	if err := writer.AwaitDelivery(ctx); err != nil {
		t.Fatalf("AwaitDelivery: %v", err)
	}
	waited := time.Since(paused)
	t.Logf("acknowledged %v after a %v hang began", waited.Round(time.Millisecond), hang)
	if got := testutil.ToFloat64(writer.m.deliveryWaits.WithLabelValues("delivered")); got != 1 {
		t.Errorf(`delivery_waits_total{outcome="delivered"} = %v, want 1`, got)
	}
	if waited < hang-50*time.Millisecond {
		t.Errorf("acknowledged %v into a %v hang: before Redis could have the invalidation", waited, hang)
	}
	f := newFill("after", true)
	if v, _ := get(t, reader, key, f.fn); v != "after" {
		t.Errorf("read after the acknowledgement: %q, want after", v)
	}
	if got := f.last.Load().MinLSN; got != pos("0/6100") {
		t.Errorf("fill after the delivered invalidation: MinLSN %v, want 0/6100", got)
	}
	if lsn, ok, err := reader.UserToken(ctx, 9); err != nil || !ok || lsn < pos("0/6100") {
		t.Errorf("token after the acknowledgement: %v, %v, %v; want ≥ 0/6100", lsn, ok, err)
	}
}

// An instance whose view of the epoch is out of date finds a record of the
// newer epoch: it serves nothing from it, and refreshes its view.
func TestStaleEpochViewRefreshed(t *testing.T) {
	prefix := testPrefix()
	// A long epoch: a's view stays good for the whole test however slowly
	// a busy machine runs it (with the default 1 s, a stall of 0.9 s lapses
	// it and a then bypasses for that reason instead).
	a, stopA := runCache(t, Config{Prefix: prefix, EpochTTL: time.Minute})
	b, _ := runCache(t, Config{Prefix: prefix, EpochTTL: time.Minute})
	ctx := testCtx(t)
	key := ConversationKey(62, KindHistory, "")
	inUse(t, a, key, "v1")
	old := a.view.Load().epoch
	stopA() // a keeps its view and does not refresh it meanwhile
	// Redis loses the epoch (evicted); b starts the next one and resets the
	// record.
	if err := b.client.Del(ctx, b.ks.epoch()).Err(); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.currentEpoch(ctx); !ok {
		t.Fatal("b has no epoch")
	}
	b.expireView(b.view.Load().epoch)
	if v, r := get(t, b, key, newFill("v2", true).fn); v != "v2" || r != ResultMiss {
		t.Fatalf("new epoch on b: %q, %v; want v2, miss", v, r)
	}
	if b.view.Load().epoch == old {
		t.Fatal("b kept the old epoch")
	}
	if v, r := get(t, a, key, newFill("x", true).fn); v != "x" || r != ResultBypass {
		t.Errorf("a with the old epoch: %q, %v; want its own fill, bypass", v, r)
	}
	if v, r := get(t, a, key, newFill("x", true).fn); v != "v2" || r != ResultHit {
		t.Errorf("a after refreshing: %q, %v; want v2, hit", v, r)
	}
}
