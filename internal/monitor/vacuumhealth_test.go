package monitor

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// newVacuumTables creates two tables of 20k rows with autovacuum off, so the
// test alone decides when they are vacuumed and analyzed.
func newVacuumTables(t *testing.T, ctx context.Context, pool *pgxpool.Pool, names ...string) {
	t.Helper()
	for _, name := range names {
		mustExec(t, ctx, pool, `CREATE TABLE `+name+` (id int PRIMARY KEY, payload text NOT NULL) WITH (autovacuum_enabled = false)`)
		mustExec(t, ctx, pool, `INSERT INTO `+name+` SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g`)
	}
}

// flushStats makes the session's pending statistics visible to others
// (PostgreSQL 15 flushes them asynchronously otherwise).
func flushStats(t *testing.T, ctx context.Context, conn execer) {
	t.Helper()
	mustExec(t, ctx, conn, `SELECT pg_stat_force_next_flush()`)
}

func TestVacuumHealth(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	s := stacktest.ForTest(t)
	db := s.NewDatabase(t)
	pool := newPool(t, db.PrimaryURL, false, nil)
	newVacuumTables(t, ctx, pool, "bloated", "fresh", "never_analyzed")
	mustExec(t, ctx, pool, `VACUUM ANALYZE bloated`)
	mustExec(t, ctx, pool, `VACUUM ANALYZE fresh`)

	reg := prometheus.NewRegistry()
	vh, err := NewVacuumHealth(VacuumHealthOptions{DB: pool, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	gauge := func(name, table string) float64 {
		return stacktest.MustMetric(t, reg, name, map[string]string{"table": table})
	}
	poll := func() {
		t.Helper()
		if _, err := vh.Poll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	poll()
	if n := testutil.CollectAndCount(reg, "parley_db_live_tuples"); n != 3 {
		t.Errorf("live tuple series = %d, want 3", n)
	}
	eventually(t, 15*time.Second, "live tuples of a vacuumed table", func() bool {
		poll()
		return gauge("parley_db_live_tuples", "fresh") == 20000
	})
	age1 := gauge("parley_db_last_vacuum_age_seconds", "bloated")
	if gauge("parley_db_frozenxid_age", "bloated") <= 0 {
		t.Error("frozenxid age not positive")
	}
	if gauge("parley_db_vacuum_running", "bloated") != 0 {
		t.Error("vacuum running on an idle table")
	}
	// Never analyzed: no bloat estimate (NaN, never a number), counted as
	// unavailable; never vacuumed: the vacuum age is the time since the
	// statistics began, at least as old as the vacuumed table's.
	if v, ok := stacktest.Metric(t, reg, "parley_db_table_bloat_ratio", map[string]string{"table": "never_analyzed"}); !ok || !math.IsNaN(v) {
		t.Errorf("bloat of a never-analyzed table = %v (exported %v), want NaN", v, ok)
	}
	if v := stacktest.MustMetric(t, reg, "parley_db_table_bloat_unavailable_tables", map[string]string{}); v != 1 {
		t.Errorf("unavailable bloat estimates = %v, want 1", v)
	}
	if never, ok := stacktest.Metric(t, reg, "parley_db_last_vacuum_age_seconds", map[string]string{"table": "never_analyzed"}); !ok || never < age1 {
		t.Errorf("vacuum age of a never-vacuumed table = %v (exported %v), want at least the vacuumed table's %v", never, ok, age1)
	}

	// Deleting rows raises the dead-tuple gauge.
	time.Sleep(1200 * time.Millisecond)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, conn, `DELETE FROM bloated WHERE id % 10 <> 0`) // 18000 rows, every page keeps some
	flushStats(t, ctx, conn)
	eventually(t, 15*time.Second, "dead tuples after DELETE", func() bool {
		poll()
		return gauge("parley_db_dead_tuples", "bloated") >= 18000
	})
	age2 := gauge("parley_db_last_vacuum_age_seconds", "bloated")
	if age2 < age1+1 {
		t.Errorf("vacuum age did not grow: %v then %v", age1, age2)
	}

	// VACUUM clears the dead tuples and resets the age. The replica's
	// hot_standby_feedback holds the cluster's xmin horizon back for up to
	// wal_receiver_status_interval (10 s), and VACUUM cannot remove rows
	// deleted after it: repeat until it can.
	eventually(t, 30*time.Second, "dead tuples after VACUUM", func() bool {
		mustExec(t, ctx, conn, `VACUUM bloated`)
		flushStats(t, ctx, conn)
		poll()
		if gauge("parley_db_dead_tuples", "bloated") < 100 {
			return true
		}
		time.Sleep(400 * time.Millisecond)
		return false
	})
	conn.Release()
	if age3 := gauge("parley_db_last_vacuum_age_seconds", "bloated"); age3 >= age2 || age3 > 1 {
		t.Errorf("vacuum age after VACUUM = %v (before %v)", age3, age2)
	}

	// The table kept its pages for a tenth of its rows: clearly bloated
	// next to a fresh table.
	mustExec(t, ctx, pool, `ANALYZE bloated`)
	mustExec(t, ctx, pool, `ANALYZE fresh`)
	poll()
	bloated, fresh := gauge("parley_db_table_bloat_ratio", "bloated"), gauge("parley_db_table_bloat_ratio", "fresh")
	t.Logf("bloat ratio: bloated %.3f, fresh %.3f; bytes %.0f / %.0f", bloated, fresh,
		gauge("parley_db_table_bloat_bytes", "bloated"), gauge("parley_db_table_bloat_bytes", "fresh"))
	if bloated < 0.7 || fresh > 0.2 || bloated-fresh < 0.5 {
		t.Errorf("bloat ratio: bloated %v, fresh %v", bloated, fresh)
	}
	if gauge("parley_db_table_bloat_bytes", "bloated") < 1<<20 {
		t.Error("bloated table reports under 1 MiB of bloat")
	}

	sum := vh.Summary()
	if sum.Tables != 3 || sum.MostBloated != "bloated" || sum.LastSuccess == nil || len(sum.BloatUnknown) != 1 {
		t.Errorf("summary: %+v", sum)
	}
}

// A vacuum in progress shows in parley_db_vacuum_running. The vacuum is
// slowed down with cost-based delay so the poll catches it.
func TestVacuumHealthSeesRunningVacuum(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	s := stacktest.ForTest(t)
	db := s.NewDatabase(t)
	pool := newPool(t, db.PrimaryURL, false, nil)
	newVacuumTables(t, ctx, pool, "slow_vacuum")

	reg := prometheus.NewRegistry()
	vh, err := NewVacuumHealth(VacuumHealthOptions{DB: pool, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	vacCtx, stopVacuum := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			done <- err
			return
		}
		defer conn.Release()
		if _, err := conn.Exec(ctx, `SET vacuum_cost_delay = 100`); err != nil {
			done <- err
			return
		}
		if _, err := conn.Exec(ctx, `SET vacuum_cost_limit = 1`); err != nil {
			done <- err
			return
		}
		_, err = conn.Exec(vacCtx, `VACUUM slow_vacuum`)
		done <- err
	}()
	eventually(t, 20*time.Second, "vacuum running", func() bool {
		if _, err := vh.Poll(ctx); err != nil {
			t.Fatal(err)
		}
		v, _ := stacktest.Metric(t, reg, "parley_db_vacuum_running", map[string]string{"table": "slow_vacuum"})
		return v == 1
	})
	if sum := vh.Summary(); len(sum.VacuumRunning) != 1 {
		t.Errorf("summary running = %v", sum.VacuumRunning)
	}
	stopVacuum()
	if err := <-done; err == nil || !errors.Is(err, context.Canceled) {
		t.Logf("vacuum ended with %v", err)
	}
}

// The label set is bounded: only the largest MaxTables tables are watched.
func TestVacuumHealthCapsTables(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	s := stacktest.ForTest(t)
	db := s.NewDatabase(t)
	pool := newPool(t, db.PrimaryURL, false, nil)
	mustExec(t, ctx, pool, `CREATE TABLE small (id int)`)
	mustExec(t, ctx, pool, `CREATE TABLE big (id int)`)
	mustExec(t, ctx, pool, `INSERT INTO big SELECT generate_series(1, 10000)`)
	mustExec(t, ctx, pool, `CREATE TABLE other_schema_table (id int)`)
	mustExec(t, ctx, pool, `CREATE SCHEMA elsewhere`)
	mustExec(t, ctx, pool, `CREATE TABLE elsewhere.huge AS SELECT generate_series(1, 50000) AS id`)

	reg := prometheus.NewRegistry()
	vh, err := NewVacuumHealth(VacuumHealthOptions{DB: pool, Registerer: reg, MaxTables: 2})
	if err != nil {
		t.Fatal(err)
	}
	tables, err := vh.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != 2 || tables[0].Table != "big" {
		t.Errorf("watched %+v; want big and one other public table", tables)
	}
	if n := testutil.CollectAndCount(reg, "parley_db_dead_tuples"); n != 2 {
		t.Errorf("dead tuple series = %d, want 2", n)
	}
}
