package dbrouter

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/stack"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// setupDB makes a fresh database with a table "items" present on the replica.
func setupDB(t *testing.T) stacktest.Database {
	t.Helper()
	s := stacktest.ForTest(t)
	db := s.NewDatabase(t)
	stacktest.Exec(t, db.PrimaryURL, `CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text NOT NULL)`)
	stacktest.Exec(t, db.PrimaryURL, `CREATE TABLE other (id int PRIMARY KEY)`)
	stacktest.Exec(t, db.PrimaryURL, `INSERT INTO other VALUES (1)`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := stack.WaitReplicaCaughtUp(ctx, db.PrimaryURL, db.ReplicaURL); err != nil {
		t.Fatal(err)
	}
	return db
}

func replicaRoute(c Consistency) Route { return Route{Consistency: c, ReplicaAllowed: true} }

func TestReadRouting(t *testing.T) {
	db := setupDB(t)
	r, reg := newRouter(t, Config{PrimaryURL: db.PrimaryURL, ReplicaURLs: []string{db.ReplicaURL}})
	if st := r.Status(); len(st) != 1 || st[0].Name != "replica1" || st[0].Breaker != "closed" || st[0].State != StateHealthy {
		t.Fatalf("status after New = %+v, want replica1 healthy and closed", st)
	}

	tests := []struct {
		name        string
		route       Route
		wantTarget  string
		wantReason  string
		wantReplica bool
	}{
		{"replica allowed, any replica", replicaRoute(AnyReplica), TargetReplica, ReasonOK, true},
		{"replica allowed, no consistency set", Route{ReplicaAllowed: true}, TargetReplica, ReasonOK, true},
		{"strong", replicaRoute(Strong), TargetPrimary, ReasonStrong, false},
		{"replica not allowed", Route{Consistency: AnyReplica}, TargetPrimary, ReasonDisabled, false},
		{"zero route", Route{}, TargetPrimary, ReasonDisabled, false},
		{"replica allowed explicitly off", Route{Consistency: AnyReplica, ReplicaAllowed: false}, TargetPrimary, ReasonDisabled, false},
	}
	for _, tt := range tests {
		var onReplica bool
		target, err := r.Read(context.Background(), "test", tt.route, func(ctx context.Context, q postgres.Querier) (err error) {
			onReplica, err = isReplica(ctx, q)
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if target != tt.wantTarget || onReplica != tt.wantReplica {
			t.Errorf("%s: target %s (in recovery %v), want %s (%v)", tt.name, target, onReplica, tt.wantTarget, tt.wantReplica)
		}
		if v, ok := stacktest.Metric(t, reg, "parley_db_reads_total", map[string]string{"endpoint": "test", "target": tt.wantTarget, "reason": tt.wantReason}); !ok || v < 1 {
			t.Errorf("%s: parley_db_reads_total{target=%s,reason=%s} = %v (present %v)", tt.name, tt.wantTarget, tt.wantReason, v, ok)
		}
	}

	// A read's SQL error comes back as it is, from the node that ran it.
	target, err := r.Read(context.Background(), "test", replicaRoute(AnyReplica), func(ctx context.Context, q postgres.Querier) error {
		_, err := q.Exec(ctx, `SELECT * FROM no_such_table`)
		return err
	})
	if target != TargetReplica || err == nil || errors.Is(err, postgres.ErrUnavailable) {
		t.Errorf("SQL error on the replica: target %s err %v; want replica and the SQL error, not retried", target, err)
	}
}

func TestReadYourWritesTokenAheadGoesToPrimary(t *testing.T) {
	db := setupDB(t)
	// A probe interval longer than the test: the breaker stays closed on the
	// snapshot New took, so the token alone decides (a probe would open the
	// breaker on the paused replay; TestBreakerOpensOnPausedReplay covers that).
	r, reg := newRouter(t, Config{PrimaryURL: db.PrimaryURL, ReplicaURLs: []string{db.ReplicaURL}, ProbeInterval: time.Hour})
	stacktest.PauseReplay(t, db.ReplicaURL)

	ctx := context.Background()
	if _, err := r.Primary().Exec(ctx, `INSERT INTO items (v) VALUES ('mine')`); err != nil {
		t.Fatal(err)
	}
	token, err := r.CommitLSN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.ReplicaCanServe(token) {
		t.Fatalf("ReplicaCanServe(%v) = true with replay paused before the write", token)
	}
	if best, ok := r.BestReplicaLSN(); !ok || best >= token || !r.ReplicaCanServe(best) || !r.ReplicaCanServe(0) {
		t.Fatalf("BestReplicaLSN = %v, %v; token %v", best, ok, token)
	}

	count := func(q postgres.Querier, ctx context.Context) (n int, err error) {
		err = q.QueryRow(ctx, `SELECT count(*) FROM items WHERE v = 'mine'`).Scan(&n)
		return n, err
	}
	const reads = 200
	for i := range reads {
		var n int
		target, err := r.Read(context.Background(), "test", replicaRoute(ReadYourWrites(token)), func(ctx context.Context, q postgres.Querier) (err error) {
			n, err = count(q, ctx)
			return err
		})
		if err != nil || target != TargetPrimary || n != 1 {
			t.Fatalf("read %d with the writer's token: target %s, rows %d, err %v; want primary, 1 row", i, target, n, err)
		}
	}
	if v, _ := stacktest.Metric(t, reg, "parley_db_reads_total", map[string]string{"target": "primary", "reason": ReasonTokenAhead}); v != reads {
		t.Errorf("reads_total{primary,token_ahead} = %v, want %d", v, reads)
	}

	// Another caller, without a token, stays on the replica (and does not see
	// the write yet: that is what the token is for).
	var n int
	target, err := r.Read(context.Background(), "test", replicaRoute(AnyReplica), func(ctx context.Context, q postgres.Querier) (err error) {
		n, err = count(q, ctx)
		return err
	})
	if err != nil || target != TargetReplica || n != 0 {
		t.Fatalf("tokenless read: target %s rows %d err %v; want replica with 0 rows (replay paused)", target, n, err)
	}
	// A token the replica has replayed is served by the replica.
	best, _ := r.BestReplicaLSN()
	if target, err := r.Read(context.Background(), "test", replicaRoute(ReadYourWrites(best)), func(ctx context.Context, q postgres.Querier) error {
		_, err := count(q, ctx)
		return err
	}); err != nil || target != TargetReplica {
		t.Fatalf("read with a replayed token: %s, %v; want replica", target, err)
	}
}

// TestReadYourWritesTokenReplayedSinceTheProbe: the replica views are a probe
// old; a token they are behind but the replica has replayed meanwhile is
// served by the replica, which says so on the read's own connection.
func TestReadYourWritesTokenReplayedSinceTheProbe(t *testing.T) {
	db := setupDB(t)
	// No probe after New's: the view stays behind every later write.
	r, reg := newRouter(t, Config{PrimaryURL: db.PrimaryURL, ReplicaURLs: []string{db.ReplicaURL}, ProbeInterval: time.Hour})
	ctx := context.Background()
	if _, err := r.Primary().Exec(ctx, `INSERT INTO items (v) VALUES ('replayed')`); err != nil {
		t.Fatal(err)
	}
	token, err := r.CommitLSN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.ReplicaCanServe(token) {
		t.Fatalf("the view (one probe, before the write) already covers %v", token)
	}
	rc, err := pgx.Connect(ctx, db.ReplicaURL)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close(context.Background())
	stacktest.WaitFor(t, 10*time.Second, "the replica replays the write", func() bool {
		var ok bool
		err := rc.QueryRow(ctx, `SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)`, token.String()).Scan(&ok)
		return err == nil && ok
	})
	var n int
	target, err := r.Read(ctx, "test", replicaRoute(ReadYourWrites(token)), func(ctx context.Context, q postgres.Querier) error {
		return q.QueryRow(ctx, `SELECT count(*) FROM items WHERE v = 'replayed'`).Scan(&n)
	})
	if err != nil || target != TargetReplica || n != 1 {
		t.Fatalf("read with a token replayed since the probe: target %s, rows %d, err %v; want the replica, 1 row", target, n, err)
	}
	if v, _ := stacktest.Metric(t, reg, "parley_db_reads_total", map[string]string{"target": "replica", "reason": ReasonOK}); v != 1 {
		t.Errorf("reads_total{replica,ok} = %v, want 1", v)
	}
}

// loadUntil runs reads (replica allowed) and writes until stop is closed and
// returns counters; every read must succeed.
type loadResult struct {
	reads, failed, onReplica, onPrimary atomic.Int64
	// firstErr is the first failed read's error: a pointer, so errors of
	// different types can be stored (atomic.Value panics on a second type).
	firstErr   atomic.Pointer[error]
	lastTarget atomic.Value
}

// first is the first failed read's error, nil when none failed.
func (l *loadResult) first() error {
	if p := l.firstErr.Load(); p != nil {
		return *p
	}
	return nil
}

func runLoad(t *testing.T, r *Router, db stacktest.Database, readers int, stop <-chan struct{}) (*loadResult, *sync.WaitGroup) {
	t.Helper()
	res := &loadResult{}
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				target, err := r.Read(ctx, "load", replicaRoute(AnyReplica), func(ctx context.Context, q postgres.Querier) error {
					var id int
					return q.QueryRow(ctx, `SELECT id FROM other WHERE id = 1`).Scan(&id)
				})
				cancel()
				res.reads.Add(1)
				switch {
				case err != nil:
					res.failed.Add(1)
					res.firstErr.CompareAndSwap(nil, &err)
				case target == TargetReplica:
					res.onReplica.Add(1)
				default:
					res.onPrimary.Add(1)
				}
				res.lastTarget.Store(target)
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	// A writer keeps WAL flowing.
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = r.Primary().Exec(context.Background(), `INSERT INTO items (v) VALUES ($1)`, "w"+strconv.Itoa(i))
			time.Sleep(5 * time.Millisecond)
		}
	})
	return res, &wg
}

func TestBreakerOpensOnPausedReplay(t *testing.T) {
	db := setupDB(t)
	r, reg := newRouter(t, Config{PrimaryURL: db.PrimaryURL, ReplicaURLs: []string{db.ReplicaURL}})
	stop := make(chan struct{})
	res, wg := runLoad(t, r, db, 4, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	// The replica serves once the router's first probe has seen it healthy.
	stacktest.WaitFor(t, 10*time.Second, "a read on the replica before the pause", func() bool { return res.onReplica.Load() > 0 })

	start := time.Now()
	stacktest.PauseReplay(t, db.ReplicaURL)
	stacktest.WaitFor(t, 5*time.Second, "breaker open", func() bool { return breakerOf(r, 0) == "open" })
	toOpen := time.Since(start)
	record(t, "pause → breaker open (probe 500 ms)", "%v", toOpen.Round(time.Millisecond))
	if toOpen > 2*time.Second {
		t.Errorf("breaker opened %v after the pause, want within 2 s", toOpen)
	}
	if st := r.Status()[0]; st.State != StatePaused {
		t.Errorf("state = %s, want paused", st.State)
	}
	// Reads now all go to the primary.
	time.Sleep(100 * time.Millisecond)
	before := res.onReplica.Load()
	time.Sleep(500 * time.Millisecond)
	if got := res.onReplica.Load(); got != before {
		t.Errorf("%d reads went to the paused replica after its breaker opened", got-before)
	}
	if v, _ := stacktest.Metric(t, reg, "parley_db_reads_total", map[string]string{"endpoint": "load", "target": "primary", "reason": ReasonNoHealthyReplica}); v == 0 {
		t.Errorf("no spill-over reads counted")
	}
	if v, _ := stacktest.Metric(t, reg, "parley_replica_breaker_state", map[string]string{"replica": "replica1"}); v != 2 {
		t.Errorf("breaker_state gauge = %v, want 2 (open)", v)
	}
	if v, _ := stacktest.Metric(t, reg, "parley_replica_breaker_transitions_total", map[string]string{"replica": "replica1", "to": "open"}); v != 1 {
		t.Errorf("transitions{to=open} = %v, want 1", v)
	}
	// The lag grows while replay is paused and writes go on.
	stacktest.WaitFor(t, 3*time.Second, "lag in bytes and seconds", func() bool { st := r.Status()[0]; return st.LagBytes > 0 && st.LagSeconds > 0 })

	start = time.Now()
	stacktest.ResumeReplay(t, db.ReplicaURL)
	stacktest.WaitFor(t, 10*time.Second, "breaker closed", func() bool { return breakerOf(r, 0) == "closed" })
	toClose := time.Since(start)
	record(t, "resume → breaker closed (3 healthy probes)", "%v", toClose.Round(time.Millisecond))
	if toClose < 700*time.Millisecond {
		t.Errorf("breaker closed %v after resume: no hysteresis?", toClose)
	}
	if v, _ := stacktest.Metric(t, reg, "parley_replica_breaker_transitions_total", map[string]string{"replica": "replica1", "to": "half_open"}); v < 1 {
		t.Errorf("no half_open transition")
	}
	before = res.onReplica.Load()
	stacktest.WaitFor(t, 2*time.Second, "replica traffic back", func() bool { return res.onReplica.Load() > before+10 })

	close(stop)
	wg.Wait()
	if f := res.failed.Load(); f != 0 {
		t.Fatalf("%d of %d reads failed, first: %v", f, res.reads.Load(), res.first())
	}
	record(t, "pause/resume under load (4 readers, 1 writer): failed reads", "0 of %d (%d on the replica, %d on the primary)", res.reads.Load(), res.onReplica.Load(), res.onPrimary.Load())
}

// A replica whose replay is blocked (here by a lock conflict with a query on
// the replica, a real-world cause) while WAL keeps arriving is "stalled": its
// breaker opens without waiting for the lag to reach the threshold.
func TestBreakerOpensOnStalledReplay(t *testing.T) {
	db := setupDB(t)
	r, _ := newRouter(t, Config{PrimaryURL: db.PrimaryURL, ReplicaURLs: []string{db.ReplicaURL}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Hold a lock on items on the replica.
	rconn, err := pgx.Connect(ctx, db.ReplicaURL)
	if err != nil {
		t.Fatal(err)
	}
	defer rconn.Close(context.Background())
	tx, err := rconn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, `SELECT count(*) FROM items`); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	res, wg := runLoad(t, r, db, 2, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	time.Sleep(200 * time.Millisecond)

	// The ALTER's access-exclusive lock cannot be replayed while the replica
	// transaction holds its lock: replay waits (max_standby_streaming_delay).
	start := time.Now()
	stacktest.Exec(t, db.PrimaryURL, `ALTER TABLE items ADD COLUMN extra int`)
	stacktest.WaitFor(t, 5*time.Second, "breaker open", func() bool { return breakerOf(r, 0) == "open" })
	toOpen := time.Since(start)
	record(t, "replay stalled (lock conflict) → breaker open", "%v", toOpen.Round(time.Millisecond))
	if toOpen > 2*time.Second {
		t.Errorf("breaker opened %v after the stall began, want within 2 s", toOpen)
	}
	if st := r.Status()[0]; st.State != StateLagging || !st.Stalled {
		t.Errorf("status = %+v, want lagging and stalled", st)
	}
	_ = tx.Rollback(ctx)
	stacktest.WaitFor(t, 10*time.Second, "breaker closed", func() bool { return breakerOf(r, 0) == "closed" })
	close(stop)
	wg.Wait()
	if f := res.failed.Load(); f != 0 {
		t.Fatalf("%d of %d reads failed, first: %v", f, res.reads.Load(), res.first())
	}
}

func TestLagSecondsStaysZeroOnIdlePrimary(t *testing.T) {
	db := setupDB(t)
	r, reg := newRouter(t, Config{PrimaryURL: db.PrimaryURL, ReplicaURLs: []string{db.ReplicaURL}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.ReplicaURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	const idle = 3 * time.Second
	var worst float64
	for start := time.Now(); time.Since(start) < idle; time.Sleep(100 * time.Millisecond) {
		st := r.Status()[0]
		worst = max(worst, st.LagSeconds)
		if st.Breaker != "closed" || st.State != StateHealthy {
			t.Fatalf("idle replica: %+v", st)
		}
	}
	var naive float64
	if err := conn.QueryRow(ctx, `SELECT coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)::float8`).Scan(&naive); err != nil {
		t.Fatal(err)
	}
	record(t, "idle primary: worst lag_seconds over 3 s", "%.3f s (now() - pg_last_xact_replay_timestamp() read %.1f s)", worst, naive)
	if worst > 1 {
		t.Errorf("lag_seconds reached %.3f s on an idle primary with a caught-up replica", worst)
	}
	if v, ok := stacktest.Metric(t, reg, "parley_replica_lag_seconds", map[string]string{"replica": "replica1"}); !ok || v > 1 {
		t.Errorf("parley_replica_lag_seconds = %v (present %v)", v, ok)
	}
}

// restartReplica starts the stopped replica again (tests share the stack).
func restartReplica(t *testing.T) {
	t.Helper()
	s := stacktest.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := stack.Up(ctx, stack.Config{DataDir: s.Dir}); err != nil {
		t.Fatalf("restart the replica: %v", err)
	}
}

func TestFallbackWhenReplicaDown(t *testing.T) {
	db := setupDB(t)
	s := stacktest.ForTest(t)
	// r1 never probes again after New: its breaker stays closed, so the stop
	// is discovered by a user read, inside Read.
	r1, reg1 := newRouter(t, Config{PrimaryURL: db.PrimaryURL, ReplicaURLs: []string{db.ReplicaURL}, ProbeInterval: time.Hour})
	r2, reg2 := newRouter(t, Config{PrimaryURL: db.PrimaryURL, ReplicaURLs: []string{db.ReplicaURL}})
	read := func(r *Router) (string, bool, error) {
		var rec bool
		target, err := r.Read(context.Background(), "test", replicaRoute(AnyReplica), func(ctx context.Context, q postgres.Querier) (err error) {
			rec, err = isReplica(ctx, q)
			return err
		})
		return target, rec, err
	}
	for _, r := range []*Router{r1, r2} {
		if target, rec, err := read(r); err != nil || target != TargetReplica || !rec {
			t.Fatalf("before the stop: %s %v %v", target, rec, err)
		}
	}

	t.Cleanup(func() { restartReplica(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.StopComponent(ctx, "replica"); err != nil {
		t.Fatal(err)
	}

	// One read: the replica fails with a connection error, the primary serves.
	target, rec, err := read(r1)
	if err != nil || target != TargetPrimary || rec {
		t.Fatalf("read with the replica stopped under a closed breaker: target %s in recovery %v err %v; want primary, no error", target, rec, err)
	}
	if v, _ := stacktest.Metric(t, reg1, "parley_db_reads_total", map[string]string{"target": "primary", "reason": ReasonFallbackError}); v != 1 {
		t.Errorf("reads_total{primary,fallback_error} = %v, want 1", v)
	}
	if b := breakerOf(r1, 0); b != "open" {
		t.Errorf("after a user read's connection error the breaker is %s, want open", b)
	}

	// With probing: every read succeeds, via the primary.
	var n, onPrimary int
	for start := time.Now(); time.Since(start) < 1500*time.Millisecond; n++ {
		target, _, err := read(r2)
		if err != nil {
			t.Fatalf("read %d with the replica down: %v", n, err)
		}
		if target == TargetPrimary {
			onPrimary++
		}
		time.Sleep(5 * time.Millisecond)
	}
	if onPrimary != n {
		t.Errorf("%d of %d reads went to the stopped replica and succeeded?", n-onPrimary, n)
	}
	if st := r2.Status()[0]; st.State != StateDown || st.Breaker != "open" {
		t.Errorf("status with the replica down: %+v", st)
	}
	record(t, "replica stopped: reads in 1.5 s", "%d of %d succeeded, all via the primary", onPrimary, n)

	// Back up: re-admitted after the healthy probes, traffic returns.
	restartReplica(t)
	stacktest.WaitFor(t, 15*time.Second, "breaker closed after restart", func() bool { return breakerOf(r2, 0) == "closed" })
	if target, rec, err := read(r2); err != nil || target != TargetReplica || !rec {
		t.Fatalf("after restart: %s %v %v", target, rec, err)
	}
	if v, _ := stacktest.Metric(t, reg2, "parley_replica_breaker_transitions_total", map[string]string{"replica": "replica1", "to": "closed"}); v < 2 {
		t.Errorf("transitions{to=closed} = %v, want ≥ 2 (start-up and re-admission)", v)
	}
}

func TestPrimaryThroughPgBouncer(t *testing.T) {
	db := setupDB(t)
	r, _ := newRouter(t, Config{PrimaryURL: db.PgBouncerURL, ReplicaURLs: []string{db.ReplicaURL}})
	ps := r.PoolStats()
	if ps[0].Name != "primary" || ps[0].ExecMode != "exec" || ps[1].Name != "replica1" || ps[1].ExecMode != "cache_statement" {
		t.Fatalf("pools = %+v", ps)
	}
	if _, ok := r.history.latest(); !ok {
		t.Fatalf("the primary prober recorded nothing through PgBouncer")
	}
	if g := r.geometry.Load(); g == nil || g.block != 8192 || g.segment != 16<<20 {
		t.Fatalf("WAL geometry read through PgBouncer = %+v", g)
	}
	ctx := context.Background()
	for i := range 20 {
		err := r.InTx(ctx, pgx.TxOptions{}, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO items (v) VALUES ($1)`, "b"+strconv.Itoa(i)); err != nil {
				return err
			}
			var n int
			return tx.QueryRow(ctx, `SELECT count(*) FROM items WHERE v LIKE $1`, "b%").Scan(&n)
		})
		if err != nil {
			t.Fatalf("tx %d through PgBouncer: %v", i, err)
		}
	}
	token, err := r.CommitLSN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		var n int
		if _, err := r.Read(context.Background(), "test", replicaRoute(Strong), func(ctx context.Context, q postgres.Querier) error {
			return q.QueryRow(ctx, `SELECT count(*) FROM items WHERE v LIKE $1`, "b%").Scan(&n)
		}); err != nil || n != 20 {
			t.Fatalf("strong read through PgBouncer: %d rows, %v", n, err)
		}
	}
	// The replica catches up to the token and then serves it.
	stacktest.WaitFor(t, 5*time.Second, "replica past the token", func() bool { return r.ReplicaCanServe(token) })
	var n int
	if target, err := r.Read(context.Background(), "test", replicaRoute(ReadYourWrites(token)), func(ctx context.Context, q postgres.Querier) error {
		return q.QueryRow(ctx, `SELECT count(*) FROM items WHERE v LIKE $1`, "b%").Scan(&n)
	}); err != nil || target != TargetReplica || n != 20 {
		t.Fatalf("read-your-writes after catch-up: %s %d %v; want replica with 20 rows", target, n, err)
	}
}

// closedPortURL is a PostgreSQL URL nothing listens on.
func closedPortURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return "postgres://parley:x@127.0.0.1:" + strconv.Itoa(port) + "/parley?sslmode=disable"
}

func TestErrUnavailable(t *testing.T) {
	db := setupDB(t)
	t.Run("pool wait bound", func(t *testing.T) {
		r, reg := newRouter(t, Config{PrimaryURL: db.PrimaryURL, PoolMaxConns: 1, AcquireTimeout: 200 * time.Millisecond})
		ctx := context.Background()
		held, err := r.Primary().Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Release()
		start := time.Now()
		_, err = r.Read(ctx, "test", Route{}, func(ctx context.Context, q postgres.Querier) error { return nil })
		if !errors.Is(err, postgres.ErrUnavailable) {
			t.Fatalf("read with the pool exhausted: %v, want postgres.ErrUnavailable", err)
		}
		if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
			t.Errorf("gave up after %v, want ~200ms", d)
		}
		if err := r.InTx(ctx, pgx.TxOptions{}, func(context.Context, pgx.Tx) error { return nil }); !errors.Is(err, postgres.ErrUnavailable) {
			t.Errorf("InTx with the pool exhausted: %v", err)
		}
		// Direct use of the pool is bounded too; Classify recognises it.
		_, err = r.Primary().Exec(ctx, `SELECT 1`)
		if !errors.Is(postgres.Classify(ctx, err), postgres.ErrUnavailable) {
			t.Errorf("Primary().Exec with the pool exhausted: %v", err)
		}
		// The caller's own cancellation is not "unavailable".
		cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if _, err := r.Read(cctx, "test", Route{}, func(ctx context.Context, q postgres.Querier) error { return nil }); err == nil || errors.Is(err, postgres.ErrUnavailable) {
			t.Errorf("caller deadline: %v, want a plain context error", err)
		}
		if v, _ := stacktest.Metric(t, reg, "parley_db_pool_acquire_duration_seconds", map[string]string{"pool": "primary"}); v < 4 {
			t.Errorf("acquire histogram count = %v, want ≥ 4", v)
		}
		if v, _ := stacktest.Metric(t, reg, "parley_db_pool_saturation_ratio", map[string]string{"pool": "primary"}); v != 1 {
			t.Errorf("saturation = %v, want 1 with the only connection held", v)
		}
	})
	t.Run("primary unreachable", func(t *testing.T) {
		r, _ := newRouter(t, Config{PrimaryURL: closedPortURL(t)})
		ctx := context.Background()
		if _, err := r.Read(ctx, "test", Route{}, func(ctx context.Context, q postgres.Querier) error { return nil }); !errors.Is(err, postgres.ErrUnavailable) {
			t.Errorf("read: %v, want postgres.ErrUnavailable", err)
		}
		if _, err := r.CommitLSN(ctx); !errors.Is(err, postgres.ErrUnavailable) {
			t.Errorf("CommitLSN: %v, want postgres.ErrUnavailable", err)
		}
		if err := r.Ping(ctx); !errors.Is(err, postgres.ErrUnavailable) {
			t.Errorf("Ping: %v, want postgres.ErrUnavailable", err)
		}
	})
}

func TestSpilloverBound(t *testing.T) {
	db := setupDB(t)
	r, reg := newRouter(t, Config{PrimaryURL: db.PrimaryURL, ReplicaURLs: []string{closedPortURL(t)},
		MaxSpillover: 1, AcquireTimeout: 200 * time.Millisecond})
	if st := r.Status()[0]; st.State != StateDown || st.Breaker != "open" {
		t.Fatalf("unreachable replica: %+v", st)
	}
	ctx, route := context.Background(), replicaRoute(AnyReplica)
	// Two primary connections open beforehand: the 200 ms bound is the
	// spill-over slot's wait, not a new connection's set-up (which takes
	// longer than that under -race on a busy machine).
	var warm []*pgxpool.Conn
	for range 2 {
		c, err := r.Primary().Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		warm = append(warm, c)
	}
	for _, c := range warm {
		c.Release()
	}
	inside, release := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() {
		_, err := r.Read(ctx, "test", route, func(ctx context.Context, q postgres.Querier) error {
			close(inside)
			<-release
			return nil
		})
		done <- err
	}()
	<-inside
	if v, _ := stacktest.Metric(t, reg, "parley_db_spillover_in_flight", nil); v != 1 {
		t.Errorf("spillover_in_flight = %v, want 1", v)
	}
	if _, err := r.Read(ctx, "test", route, func(ctx context.Context, q postgres.Querier) error { return nil }); !errors.Is(err, postgres.ErrUnavailable) {
		t.Errorf("second spill-over read over the bound: %v, want postgres.ErrUnavailable", err)
	}
	// Reads the router was not asked to put on a replica are not bounded.
	if target, err := r.Read(context.Background(), "test", replicaRoute(Strong), func(ctx context.Context, q postgres.Querier) error { return nil }); err != nil || target != TargetPrimary {
		t.Errorf("strong read during spill-over saturation: %s %v", target, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if target, err := r.Read(ctx, "test", route, func(ctx context.Context, q postgres.Querier) error { return nil }); err != nil || target != TargetPrimary {
		t.Errorf("spill-over read after the slot freed: %s %v", target, err)
	}
	if v, _ := stacktest.Metric(t, reg, "parley_db_spillover_rejected_total", map[string]string{"endpoint": "test"}); v != 1 {
		t.Errorf("spillover_rejected_total = %v, want 1", v)
	}
	if v, _ := stacktest.Metric(t, reg, "parley_db_reads_total", map[string]string{"target": "primary", "reason": ReasonNoHealthyReplica}); v != 2 {
		t.Errorf("reads_total{primary,no_healthy_replica} = %v, want 2", v)
	}
}

func TestMetricsExported(t *testing.T) {
	db := setupDB(t)
	r, reg := newRouter(t, Config{PrimaryURL: db.PrimaryURL, ReplicaURLs: []string{db.ReplicaURL}})
	if _, err := r.Read(context.Background(), "message_history", replicaRoute(AnyReplica), func(ctx context.Context, q postgres.Querier) error {
		_, err := isReplica(ctx, q)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	r.RecordRead("message_history", TargetCache, "hit")
	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"parley_db_reads_total", map[string]string{"endpoint": "message_history", "target": "replica", "reason": "ok"}},
		{"parley_db_reads_total", map[string]string{"endpoint": "message_history", "target": "cache", "reason": "hit"}},
		{"parley_db_pool_acquire_duration_seconds", map[string]string{"pool": "replica1"}},
		{"parley_db_pool_connections", map[string]string{"pool": "primary", "state": "max"}},
		{"parley_db_pool_connections", map[string]string{"pool": "replica1", "state": "idle"}},
		{"parley_db_pool_connections", map[string]string{"pool": "replica1", "state": "in_use"}},
		{"parley_db_pool_saturation_ratio", map[string]string{"pool": "primary"}},
		{"parley_replica_lag_bytes", map[string]string{"replica": "replica1"}},
		{"parley_replica_lag_seconds", map[string]string{"replica": "replica1"}},
		{"parley_replica_breaker_state", map[string]string{"replica": "replica1"}},
		{"parley_replica_breaker_transitions_total", map[string]string{"replica": "replica1", "to": "open"}},
		{"parley_db_spillover_in_flight", nil},
	} {
		if _, ok := stacktest.Metric(t, reg, c.name, c.labels); !ok {
			t.Errorf("missing %s%v", c.name, c.labels)
		}
	}
	if v, _ := stacktest.Metric(t, reg, "parley_db_pool_connections", map[string]string{"pool": "primary", "state": "max"}); v <= 0 {
		t.Errorf("primary max connections = %v", v)
	}
}

func TestConfigErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := New(ctx, Config{}); err == nil {
		t.Error("New without PrimaryURL succeeded")
	}
	if _, err := New(ctx, Config{PrimaryURL: "postgres://x@127.0.0.1/x", PrimaryExecMode: "prepared"}); err == nil {
		t.Error("unknown exec mode accepted")
	}
	if _, err := New(ctx, Config{PrimaryURL: "postgres://x@127.0.0.1/x", ReplicaURLs: []string{"::not a url"}}); err == nil {
		t.Error("bad replica URL accepted")
	}
	r, err := New(ctx, Config{PrimaryURL: closedPortURL(t), ReplicaURLs: []string{"", " "}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if len(r.Status()) != 0 {
		t.Errorf("blank replica URLs made replicas: %+v", r.Status())
	}
}

// TestStoreOnExhaustedPool: the store's writes on the router's primary pool
// are bounded by its acquire wait: a pool whose only connection is busy
// gives postgres.ErrUnavailable (wrapping the deadline) within the bound,
// and the caller's own cancellation is not "unavailable".
func TestStoreOnExhaustedPool(t *testing.T) {
	db := setupDB(t)
	ctx := context.Background()
	r, _ := newRouter(t, Config{PrimaryURL: db.PrimaryURL, PoolMaxConns: 1, AcquireTimeout: 100 * time.Millisecond})
	if _, err := postgres.Migrate(ctx, r.Primary(), nil); err != nil {
		t.Fatal(err)
	}
	busy := postgres.New(r.Primary())
	held, err := r.Primary().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _, _, err = busy.CreateUser(ctx, "waiting", "")
	if !errors.Is(err, postgres.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CreateUser with the pool exhausted: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("waited %v for the 100ms bound", d)
	}
	held.Release()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, _, _, err = busy.CreateUser(cctx, "cancelled", "")
	if err == nil || errors.Is(err, postgres.ErrUnavailable) {
		t.Fatalf("cancelled call: %v", err)
	}
}
