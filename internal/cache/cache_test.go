package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/internal/stack/stacktest"
	"github.com/parley-chat/parley/internal/wal"
)

func TestMain(m *testing.M) {
	redis.SetLogger(RedisLogger(quiet)) // no "failed to dial" lines while Redis is stopped
	os.Exit(stacktest.Main(m))
}

var (
	quiet     = slog.New(slog.NewTextHandler(io.Discard, nil))
	prefixSeq atomic.Int64
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newClient connects to the test stack's Redis with the production options.
func newClient(t testing.TB) redis.UniversalClient {
	t.Helper()
	c, err := NewClient(stacktest.ForTest(t).RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testPrefix isolates a test's keys in the shared Redis.
func testPrefix() string { return fmt.Sprintf("t%d-%d:", os.Getpid(), prefixSeq.Add(1)) }

// newCache returns a running cache with its own client, registry and prefix
// (pass cfg.Prefix to share keys between two caches, like two instances).
func newCache(t testing.TB, cfg Config) *Cache {
	t.Helper()
	return newCacheOn(t, newClient(t), cfg)
}

// newCacheOn is newCache on a given client (e.g. one with a hook).
func newCacheOn(t testing.TB, client redis.UniversalClient, cfg Config) *Cache {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = testPrefix()
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	if cfg.OpTimeout == 0 {
		// Functional tests must not trip on -race on a busy 2-core machine;
		// the fail-open tests set production-like timeouts themselves.
		cfg.OpTimeout = time.Second
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.Position == nil {
		cfg.Position = floorAt(testFloor)
	}
	c := New(client, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// testFloor is the primary's position in the tests that do not set one: the
// floor of every record the cache creates.
var testFloor = pos("0/1")

// floorAt stands in for the primary's current position (Config.Position).
func floorAt(p wal.LSN) func(context.Context) (wal.LSN, error) {
	return func(context.Context) (wal.LSN, error) { return p, nil }
}

// fillCounter is a fill function that returns value and counts its calls,
// recording the last Fill it was given.
type fillCounter struct {
	calls     atomic.Int64
	value     atomic.Pointer[[]byte]
	cacheable bool
	last      atomic.Pointer[Fill]
}

func newFill(value string, cacheable bool) *fillCounter {
	f := &fillCounter{cacheable: cacheable}
	f.set(value)
	return f
}

func (f *fillCounter) set(v string) { b := []byte(v); f.value.Store(&b) }

func (f *fillCounter) fn(ctx context.Context, fl Fill) ([]byte, bool, error) {
	f.calls.Add(1)
	f.last.Store(&fl)
	return *f.value.Load(), f.cacheable, nil
}

func get(t testing.TB, c *Cache, key Key, fill FillFunc) (string, Result) {
	t.Helper()
	v, r, err := c.GetOrFill(testCtx(t), "test", key, fill)
	if err != nil {
		t.Fatalf("GetOrFill(%v): %v", key, err)
	}
	return string(v), r
}

func TestGetOrFill(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := newCache(t, Config{Registerer: reg, MaxValueBytes: 1000})
	page := ConversationKey(1, KindHistory, "before=:limit=50")

	f := newFill("page-1", true)
	if v, r := get(t, c, page, f.fn); v != "page-1" || r != ResultMiss {
		t.Fatalf("cold read = %q, %v; want page-1, miss", v, r)
	}
	if fl := f.last.Load(); !fl.Store || fl.MinLSN != testFloor || fl.Generation == 0 {
		t.Errorf("fill of a new owner got %+v, want Store, MinLSN the new record's floor %v, a generation", *fl, testFloor)
	}
	f.set("changed-in-db-but-not-invalidated")
	if v, r := get(t, c, page, f.fn); v != "page-1" || r != ResultHit {
		t.Fatalf("warm read = %q, %v; want page-1, hit", v, r)
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("fill called %d times, want 1", n)
	}

	tests := []struct {
		name      string
		key       Key
		fill      FillFunc
		wantValue string
		wantErr   bool
		stored    bool
	}{
		{"other params", ConversationKey(1, KindHistory, "before=X:limit=50"), newFill("page-X", true).fn, "page-X", false, true},
		{"other kind, same owner", ConversationKey(1, "members", ""), newFill("m", true).fn, "m", false, true},
		{"user owner", UserKey(1, KindConversations, "limit=30"), newFill("list", true).fn, "list", false, true},
		{"empty value", UserKey(2, KindUnread, ""), newFill("", true).fn, "", false, true},
		{"not cacheable", ConversationKey(2, KindHistory, ""), newFill("replica-behind", false).fn, "replica-behind", false, false},
		{"too large", ConversationKey(3, KindHistory, ""), newFill(string(bytes.Repeat([]byte("x"), 1001)), true).fn, "", false, false},
		{"fill error", ConversationKey(4, KindHistory, ""), func(context.Context, Fill) ([]byte, bool, error) {
			return nil, true, errors.New("db down")
		}, "", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			v, r, err := c.GetOrFill(ctx, "test", tt.key, tt.fill)
			if (err != nil) != tt.wantErr || r != ResultMiss {
				t.Fatalf("first read: %v, %v; wantErr %v, miss", r, err, tt.wantErr)
			}
			if tt.wantValue != "" && string(v) != tt.wantValue {
				t.Errorf("first read = %q, want %q", v, tt.wantValue)
			}
			_, r, _ = c.GetOrFill(ctx, "test", tt.key, tt.fill)
			if got := r == ResultHit; got != tt.stored {
				t.Errorf("second read: %v, want stored=%v", r, tt.stored)
			}
		})
	}

	if got := testutil.ToFloat64(c.m.requests.WithLabelValues("test", "hit")); got < 5 {
		t.Errorf(`parley_cache_requests_total{result="hit"} = %v, want ≥ 5`, got)
	}
	if got := testutil.ToFloat64(c.m.up); got != 1 {
		t.Errorf("parley_cache_up = %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "parley_cache_requests_total", "parley_cache_up", "parley_cache_invalidations_total"); err != nil || n < 3 {
		t.Errorf("registered metrics: %d, %v", n, err)
	}
}

// Keys follow the documented layout, with the hash tag first.
func TestKeyLayout(t *testing.T) {
	ks := keyspace{prefix: "p:"}
	head, tail := ks.dataParts(ConversationKey(123, KindHistory, "before=C:limit=50"))
	if got := head + "42" + tail; got != "p:{conv:123}:hist:g42:before=C:limit=50" {
		t.Errorf("data key = %q", got)
	}
	if got := ks.gen(scopeUser, 7); got != "p:{user:7}:gen" {
		t.Errorf("generation key = %q", got)
	}
	if got := ks.epoch(); got != "p:{epoch}" {
		t.Errorf("epoch key = %q", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("a prefix with braces was accepted")
		}
	}()
	New(nil, Config{Prefix: "{x}"})
}

func TestInvalidation(t *testing.T) {
	c := newCache(t, Config{})
	ctx := testCtx(t)
	hist := ConversationKey(10, KindHistory, "limit=50")
	lists := map[int64]Key{7: UserKey(7, KindConversations, "limit=30"), 8: UserKey(8, KindConversations, "limit=30"), 9: UserKey(9, KindConversations, "limit=30")}
	histFill := newFill("h1", true)
	listFills := map[int64]*fillCounter{7: newFill("l7", true), 8: newFill("l8", true), 9: newFill("l9", true)}
	get(t, c, hist, histFill.fn)
	for id, k := range lists {
		get(t, c, k, listFills[id].fn)
	}

	// A send into conversation 10 (members 7 and 8).
	histFill.set("h2")
	listFills[7].set("l7'")
	listFills[8].set("l8'")
	listFills[9].set("l9-not-invalidated")
	c.InvalidateConversation(ctx, 10, []int64{7, 8}, pos("0/3000"))

	if v, r := get(t, c, hist, histFill.fn); v != "h2" || r != ResultMiss {
		t.Errorf("history after invalidation = %q, %v; want h2, miss", v, r)
	}
	if fl := histFill.last.Load(); fl.MinLSN != pos("0/3000") {
		t.Errorf("fill after a write at 0/3000 got MinLSN %v", fl.MinLSN)
	}
	for id, want := range map[int64]string{7: "l7'", 8: "l8'", 9: "l9"} {
		if v, _ := get(t, c, lists[id], listFills[id].fn); v != want {
			t.Errorf("user %d list = %q, want %q", id, v, want)
		}
	}
	if v, r := get(t, c, hist, histFill.fn); v != "h2" || r != ResultHit {
		t.Errorf("history refilled = %q, %v; want h2, hit", v, r)
	}

	// A read marker moved: only that user's values change.
	listFills[7].set("l7''")
	c.InvalidateUser(ctx, 7, pos("0/3100"))
	if v, _ := get(t, c, lists[7], listFills[7].fn); v != "l7''" {
		t.Errorf("user 7 list after InvalidateUser = %q", v)
	}
	if _, r := get(t, c, hist, histFill.fn); r != ResultHit {
		t.Errorf("history after another owner's invalidation: %v, want hit", r)
	}
	if got := testutil.ToFloat64(c.m.invalidations.WithLabelValues("user")); got != 3 {
		t.Errorf(`parley_cache_invalidations_total{kind="user"} = %v, want 3`, got)
	}
}

// The write position kept with a generation only rises, and an unknown
// position (0, wal.Unknown) restricts fills to the primary (MinLSN
// wal.Unknown) until the record is re-created.
func TestGenerationWritePosition(t *testing.T) {
	c := newCache(t, Config{})
	ctx := testCtx(t)
	steps := []struct {
		lsn  wal.LSN
		want wal.LSN
	}{
		{pos("0/200"), pos("0/200")},
		{pos("0/100"), pos("0/200")}, // a slower writer's older position
		{pos("1/0"), pos("1/0")},
		{0, wal.Unknown},          // unknown
		{pos("9/0"), wal.Unknown}, // unknown stays until the record is re-created
		{wal.Unknown, wal.Unknown},
	}
	key := ConversationKey(20, KindHistory, "")
	for i, st := range steps {
		c.InvalidateConversation(ctx, 20, nil, st.lsn)
		f := newFill(fmt.Sprint(i), false)
		get(t, c, key, f.fn)
		if got := f.last.Load().MinLSN; got != st.want {
			t.Errorf("after write at %v: MinLSN %v, want %v", st.lsn, got, st.want)
		}
	}
}

// A fill that started before an invalidation stores under the old
// generation; it is never served after the invalidation.
func TestStaleFillNeverServedAfterInvalidation(t *testing.T) {
	c := newCache(t, Config{LeaseWait: time.Millisecond})
	ctx := testCtx(t)
	key := ConversationKey(30, KindHistory, "")
	inFill, release := make(chan struct{}), make(chan struct{})
	slow := func(context.Context, Fill) ([]byte, bool, error) {
		close(inFill)
		<-release
		return []byte("old"), true, nil
	}
	done := make(chan string)
	go func() {
		v, _, _ := c.GetOrFill(ctx, "test", key, slow)
		done <- string(v)
	}()
	<-inFill                                            // the slow fill read generation g and the "old" row
	c.InvalidateConversation(ctx, 30, nil, pos("0/10")) // a write commits: g+1
	fresh := newFill("new", true)
	if v, _ := get(t, c, key, fresh.fn); v != "new" {
		t.Fatalf("read after the write = %q, want new", v)
	}
	close(release) // the slow fill now stores "old" under g
	if v := <-done; v != "old" {
		t.Fatalf("slow reader got %q", v)
	}
	for range 5 {
		if v, _ := get(t, c, key, fresh.fn); v != "new" {
			t.Fatalf("read after the late fill = %q, want new", v)
		}
	}
}

// A missing generation record (evicted, expired, Redis restarted) is
// re-created above every earlier generation, so old entries stay unreachable.
func TestGenerationRecreatedAboveOld(t *testing.T) {
	c := newCache(t, Config{})
	ctx := testCtx(t)
	key := ConversationKey(40, KindHistory, "")
	get(t, c, key, newFill("v1", true).fn)
	c.InvalidateConversation(ctx, 40, nil, pos("0/1"))
	f := newFill("v2", true)
	get(t, c, key, f.fn)
	g2 := f.last.Load().Generation
	if err := c.client.Del(ctx, c.ks.gen(scopeConversation, 40)).Err(); err != nil { // evicted
		t.Fatal(err)
	}
	f3 := newFill("v3", true)
	if v, r := get(t, c, key, f3.fn); v != "v3" || r != ResultMiss {
		t.Fatalf("after the record was evicted: %q, %v; want v3, miss", v, r)
	}
	if g3 := f3.last.Load().Generation; g3 <= g2 {
		t.Errorf("re-created generation %d ≤ old %d", g3, g2)
	}
}

// Lookups fall back to EVAL and invalidations reload the scripts after a
// SCRIPT FLUSH (a new Redis, a failover).
func TestScriptsReloaded(t *testing.T) {
	c := newCache(t, Config{})
	ctx := testCtx(t)
	key := ConversationKey(50, KindHistory, "")
	get(t, c, key, newFill("a", true).fn)
	if err := c.client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	c.InvalidateConversation(ctx, 50, []int64{1}, pos("0/5"))
	if n := c.pending.size(); n != 0 {
		t.Fatalf("%d invalidations pending after SCRIPT FLUSH", n)
	}
	if v, r := get(t, c, key, newFill("b", true).fn); v != "b" || r != ResultMiss {
		t.Errorf("after flush + invalidation: %q, %v", v, r)
	}
}

func TestNilClientBypasses(t *testing.T) {
	c := New(nil, Config{Logger: quiet})
	f := newFill("v", true)
	for range 2 {
		if v, r := get(t, c, ConversationKey(1, KindHistory, ""), f.fn); v != "v" || r != ResultBypass {
			t.Errorf("nil client: %q, %v", v, r)
		}
	}
	if f.last.Load().Store {
		t.Error("bypass fill was told it would be stored")
	}
	c.InvalidateConversation(testCtx(t), 1, []int64{2}, pos("0/1"))
	if c.Up() {
		t.Error("Up() with no Redis")
	}
}

func TestPendingOverflowBypassesAll(t *testing.T) {
	var p pendingSet
	if p.blocks("a") {
		t.Fatal("empty set blocks")
	}
	if p.add([]string{"a", "b"}, pos("0/1"), 2, time.Hour) {
		t.Fatal("overflow below the limit")
	}
	if !p.blocks("a") || p.blocks("c") {
		t.Fatal("queued owner not blocked, or another owner blocked")
	}
	p.add([]string{"a"}, pos("0/0"), 2, time.Hour) // lower position: keeps 0/1
	if _, pos := p.list(); pos[0] != 1 && pos[1] != 1 {
		t.Errorf("positions %v lost the higher 0/1", pos)
	}
	if !p.add([]string{"c"}, pos("0/1"), 2, 50*time.Millisecond) {
		t.Fatal("no overflow past the limit")
	}
	if !p.blocks("z") {
		t.Error("after an overflow every owner must be bypassed")
	}
	time.Sleep(60 * time.Millisecond)
	if p.blocks("z") {
		t.Error("still bypassing after the TTL")
	}
	p.done("a", pos("0/1"))
	p.done("b", pos("0/1"))
	if p.blocks("a") || p.active.Load() != 0 {
		t.Errorf("replayed owners still blocked (active %d)", p.active.Load())
	}
}

// pos is a WAL position from its text, for tests.
func pos(s string) wal.LSN {
	l, err := wal.Parse(s)
	if err != nil {
		panic(err)
	}
	return l
}
