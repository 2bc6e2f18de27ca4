package rollout

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

func TestMain(m *testing.M) {
	os.Exit(stacktest.Main(m, stacktest.Migrated(postgres.SchemaFingerprint(), postgres.Migrate)))
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newPool returns a pool on a fresh, migrated database. viaPgBouncer uses
// the PgBouncer URL in exec mode, as production does.
func newPool(t *testing.T, ctx context.Context, url string, viaPgBouncer bool) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	if viaPgBouncer {
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func migratedDB(t *testing.T, ctx context.Context) stacktest.Database {
	t.Helper()
	db := stacktest.ForTest(t).NewDatabase(t)
	pool := newPool(t, ctx, db.PrimaryURL, false)
	if _, err := postgres.Migrate(ctx, pool, quiet); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

func ip(v int) *int   { return &v }
func bp(v bool) *bool { return &v }

func TestSetGetRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	db := migratedDB(t, ctx)
	reg := prometheus.NewRegistry()
	s := NewStore(newPool(t, ctx, db.PgBouncerURL, true), quiet, reg)

	// Defaults from the migration: everything on the baseline.
	got, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("List = %+v, want 3 endpoints", got)
	}
	for i, st := range got {
		if want := (chat.Rollout{Endpoint: chat.RolloutEndpoints()[i]}); st != want {
			t.Errorf("default %d = %+v, want %+v", i, st, want)
		}
	}

	steps := []struct {
		name string
		ep   string
		u    chat.RolloutUpdate
		want chat.Rollout
	}{
		{"percent only", chat.EndpointMessageHistory, chat.RolloutUpdate{Percent: ip(25)}, ro(chat.EndpointMessageHistory, 25, false, false)},
		{"cache only", chat.EndpointMessageHistory, chat.RolloutUpdate{Cache: bp(true)}, ro(chat.EndpointMessageHistory, 25, true, false)},
		{"all", chat.EndpointMessageHistory, chat.RolloutUpdate{Percent: ip(100), Cache: bp(false), Replica: bp(true)}, ro(chat.EndpointMessageHistory, 100, false, true)},
		{"empty is a read", chat.EndpointMessageHistory, chat.RolloutUpdate{}, ro(chat.EndpointMessageHistory, 100, false, true)},
		{"other endpoint", chat.EndpointUnreadCount, chat.RolloutUpdate{Replica: bp(true), Percent: ip(0)}, ro(chat.EndpointUnreadCount, 0, false, true)},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			got, err := s.Set(ctx, st.ep, st.u)
			if err != nil {
				t.Fatal(err)
			}
			if got != st.want {
				t.Errorf("Set = %+v, want %+v", got, st.want)
			}
			if got, err := s.Get(ctx, st.ep); err != nil || got != st.want {
				t.Errorf("Get = %+v, %v; want %+v", got, err, st.want)
			}
			// Set applies to the local snapshot at once.
			i, _ := endpointIndex(st.ep)
			if got := s.Snapshot()[i]; got != st.want {
				t.Errorf("Snapshot = %+v, want %+v", got, st.want)
			}
		})
	}
	if v := testutil.ToFloat64(s.metrics.percent.WithLabelValues(chat.EndpointMessageHistory)); v != 100 {
		t.Errorf("parley_rollout_percent{message_history} = %v, want 100", v)
	}
	if d := s.Decide(chat.EndpointMessageHistory, 42); d != (Decision{Optimized: true, Replica: true, Cohort: chat.CohortOptimized}) {
		t.Errorf("Decide at 100%% = %+v", d)
	}
	if d := s.Decide(chat.EndpointConversationList, 42); d != (Decision{Cohort: chat.CohortBaseline}) {
		t.Errorf("Decide at 0%% = %+v", d)
	}
}

func TestSetRejects(t *testing.T) {
	ctx := testCtx(t)
	db := migratedDB(t, ctx)
	s := NewStore(newPool(t, ctx, db.PrimaryURL, false), quiet, nil)
	tests := []struct {
		name string
		ep   string
		u    chat.RolloutUpdate
		want string // chat error code
	}{
		{"percent 101", chat.EndpointMessageHistory, chat.RolloutUpdate{Percent: ip(101)}, chat.EINVALID},
		{"percent -1", chat.EndpointMessageHistory, chat.RolloutUpdate{Percent: ip(-1)}, chat.EINVALID},
		{"unknown endpoint", "search", chat.RolloutUpdate{Percent: ip(10)}, chat.ENOTFOUND},
		{"empty endpoint", "", chat.RolloutUpdate{}, chat.ENOTFOUND},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Set(ctx, tt.ep, tt.u); chat.ErrorCode(err) != tt.want {
				t.Errorf("Set = %v, want code %s", err, tt.want)
			}
		})
	}
	if _, err := s.Get(ctx, "search"); chat.ErrorCode(err) != chat.ENOTFOUND {
		t.Errorf("Get(unknown) = %v, want ENOTFOUND", err)
	}
	// Nothing was written.
	st, err := s.Get(ctx, chat.EndpointMessageHistory)
	if err != nil || st.Percent != 0 {
		t.Errorf("after rejected updates: %+v, %v", st, err)
	}
	// The database refuses out-of-range values too (the CHECK constraint).
	if err := stacktest.ForTest(t).Exec(ctx, db.Name, `UPDATE rollouts SET percent = 101`); err == nil {
		t.Error("CHECK constraint let percent = 101 in")
	}
}

// A change made through one instance is applied by another within 2 s.
func TestChangePropagatesToOtherInstance(t *testing.T) {
	ctx := testCtx(t)
	db := migratedDB(t, ctx)
	a := NewStore(newPool(t, ctx, db.PgBouncerURL, true), quiet, nil)
	b := NewStore(newPool(t, ctx, db.PgBouncerURL, true), quiet, nil)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { b.Run(runCtx); close(done) }()
	t.Cleanup(func() { stop(); <-done })

	waitFor := func(want chat.Rollout) time.Duration {
		start := time.Now()
		for time.Since(start) < 2*time.Second {
			if got := b.Snapshot()[0]; got == want {
				return time.Since(start)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("instance b still has %+v 2 s after the change to %+v", b.Snapshot()[0], want)
		return 0
	}
	// Wait for b's first read, so the timings below measure propagation only.
	waitFor(chat.Rollout{Endpoint: chat.EndpointMessageHistory})
	for _, pct := range []int{10, 20, 0} {
		st, err := a.Set(ctx, chat.EndpointMessageHistory, chat.RolloutUpdate{Percent: ip(pct), Cache: bp(pct > 0)})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("percent %d applied by the other instance after %v", pct, waitFor(st).Round(time.Millisecond))
	}
}

// A poll that read the table before a Set must not undo the Set.
func TestMergeKeepsNewerVersion(t *testing.T) {
	s := NewStore(nil, quiet, nil)
	newer := entry{Rollout: ro(chat.EndpointMessageHistory, 30, true, false), version: 9}
	older := entry{Rollout: ro(chat.EndpointMessageHistory, 10, false, false), version: 7}
	s.merge(newer)
	s.merge(older)
	if got := s.Snapshot()[0]; got != newer.Rollout {
		t.Errorf("after an older read: %+v, want %+v", got, newer.Rollout)
	}
	s.merge(entry{Rollout: chat.Rollout{Endpoint: "search", Percent: 50}, version: 100})
	if got := len(s.Snapshot()); got != 3 {
		t.Errorf("unknown endpoint added a state: %d", got)
	}
}

func TestDecideAllocationFree(t *testing.T) {
	s := NewStore(nil, quiet, nil)
	s.merge(entry{Rollout: ro(chat.EndpointMessageHistory, 50, true, true), version: 1})
	allocs := testing.AllocsPerRun(1000, func() {
		_ = s.Decide(chat.EndpointMessageHistory, 123456789)
		_ = s.Decide("unknown", 1)
	})
	if allocs != 0 {
		t.Errorf("Decide allocates %v times per call", allocs)
	}
	in := 0
	for id := int64(0); id < 10000; id++ {
		d := s.Decide(chat.EndpointMessageHistory, id)
		if d.Optimized {
			in++
			if !d.Cache || !d.Replica || d.Cohort != chat.CohortOptimized {
				t.Fatalf("optimized decision %+v", d)
			}
		} else if d.Cache || d.Replica || d.Cohort != chat.CohortBaseline {
			t.Fatalf("baseline decision %+v", d)
		}
	}
	if in < 4600 || in > 5400 {
		t.Errorf("%d of 10000 users optimized at 50%%", in)
	}
}

func BenchmarkDecide(b *testing.B) {
	s := NewStore(nil, quiet, nil)
	s.merge(entry{Rollout: ro(chat.EndpointMessageHistory, 50, true, true), version: 1})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var id int64
		for pb.Next() {
			id++
			_ = s.Decide(chat.EndpointMessageHistory, id)
		}
	})
}

// ro is a rollout state, for tables.
func ro(endpoint string, percent int, cache, replica bool) chat.Rollout {
	return chat.Rollout{Endpoint: endpoint, Percent: percent, Cache: cache, Replica: replica}
}
