package monitor

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// The monitors together, as `parley serve` runs them: autovacuum settings
// applied first, every monitor polling in its own goroutine, all stopped by
// the context, and a JSON summary.
func TestMonitorsRunAndSummary(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	s := stacktest.ForTest(t)
	db, pool := migratedDB(t)
	mustExec(t, ctx, pool, `ALTER TABLE messages SET (autovacuum_vacuum_threshold = 123)`)

	reg := prometheus.NewRegistry()
	qp, err := NewQueryPerformance(QueryPerformanceOptions{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	traced := newPool(t, db.PrimaryURL, false, qp.Tracer("primary"))
	mon, err := New(Config{
		Registerer:        reg,
		Primary:           traced,
		PgBouncerAdminURL: s.PgBouncerAdminURL(),
		VacuumHealth:      VacuumHealthOptions{Interval: 200 * time.Millisecond},
		PgBouncer:         PgBouncerOptions{Interval: 200 * time.Millisecond},
		Autovacuum:        AutovacuumOptions{Interval: 200 * time.Millisecond},
		Queries:           qp,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mon.Run(runCtx) }()

	for _, m := range []string{"autovacuum_config", "vacuum_health", "pgbouncer"} {
		eventually(t, 10*time.Second, m+" succeeded", func() bool {
			// 0 until the first success, so a monitor stuck from the start shows.
			v, _ := stacktest.Metric(t, reg, "parley_monitor_last_success_timestamp_seconds", map[string]string{"monitor": m})
			return v > 0
		})
	}
	// Start-up re-applied the declaration over the manual change.
	if got := reloptions(t, ctx, pool, "messages"); !strings.Contains(strings.Join(got, ","), "autovacuum_vacuum_threshold=10000") {
		t.Errorf("messages after start-up: %v", got)
	}
	// The monitors' own queries are traced under bounded names.
	if v, _ := stacktest.Metric(t, reg, "parley_db_query_duration_seconds", map[string]string{"query": "monitor_vacuum_health", "target": "primary"}); v < 1 {
		t.Error("vacuum health queries not traced by name")
	}

	b, err := json.Marshal(mon.Summary())
	if err != nil {
		t.Fatal(err)
	}
	var sum map[string]any
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"autovacuum", "vacuum_health", "pgbouncer", "queries"} {
		if sum[k] == nil {
			t.Errorf("summary lacks %q: %s", k, b)
		}
	}
	if !strings.Contains(string(b), `"up":true`) || !strings.Contains(string(b), `"last_success"`) {
		t.Errorf("summary: %s", b)
	}
	t.Logf("summary: %s", b)

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// Without a primary or an admin URL the monitors are simply absent.
func TestMonitorsDisabled(t *testing.T) {
	mon, err := New(Config{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := mon.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(mon.Summary()); string(b) != "{}" {
		t.Errorf("summary = %s", b)
	}
}

// With nothing reachable the monitors fail quietly: no panic, errors in the
// summary, last-success 0, and Run still stops on cancel.
func TestMonitorsWithUnreachableDatabases(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	dead := "postgres://parley:pw@127.0.0.1:1/parley?sslmode=disable&connect_timeout=1"
	pool := newPool(t, dead, false, nil)
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	mon, err := New(Config{
		Registerer: reg, Logger: logs.logger(), Primary: pool,
		PgBouncerAdminURL: "postgres://parley:pw@127.0.0.1:1/pgbouncer?sslmode=disable",
		VacuumHealth:      VacuumHealthOptions{Interval: 100 * time.Millisecond},
		PgBouncer:         PgBouncerOptions{Interval: 100 * time.Millisecond},
		Autovacuum:        AutovacuumOptions{Interval: 100 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	states, err := mon.Autovacuum().Apply(ctx)
	if err == nil || time.Since(start) > 5*time.Second {
		t.Errorf("apply against a dead primary: err %v after %v", err, time.Since(start))
	}
	if len(states) != 1 || states[0].State != "error" {
		t.Errorf("apply went on after a connection failure: %+v", states)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mon.Run(runCtx) }()
	time.Sleep(time.Second)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	sum := mon.Summary()
	if sum.Autovacuum.LastError == "" || sum.VacuumHealth.LastError == "" || sum.PgBouncer.LastError == "" || sum.PgBouncer.Up {
		t.Errorf("summary: %+v", sum)
	}
	for _, m := range []string{"autovacuum_config", "vacuum_health", "pgbouncer"} {
		if v := stacktest.MustMetric(t, reg, "parley_monitor_last_success_timestamp_seconds", map[string]string{"monitor": m}); v != 0 {
			t.Errorf("%s last success = %v", m, v)
		}
	}
	if v := stacktest.MustMetric(t, reg, "parley_pgbouncer_up", map[string]string{}); v != 0 {
		t.Errorf("pgbouncer up = %v", v)
	}
	// About ten failed polls per monitor, one line per monitor (same error).
	if n := strings.Count(logs.String(), "monitor failed"); n > 4 {
		t.Errorf("%d failure lines in 1 s:\n%s", n, logs)
	}
}
