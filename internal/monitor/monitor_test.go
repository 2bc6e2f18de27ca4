package monitor

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/stack"
)

// The monitors together, as `parley serve` runs them: autovacuum settings
// applied first, every monitor polling in its own goroutine, all stopped by
// the context, and a JSON summary.
func TestMonitorsRunAndSummary(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	s := stack.ForTest(t)
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
			v, _ := sample(t, reg, "parley_monitor_last_success_timestamp_seconds", map[string]string{"monitor": m})
			return v > 0
		})
	}
	// Start-up re-applied the declaration over the manual change.
	if got := reloptions(t, ctx, pool, "messages"); !strings.Contains(strings.Join(got, ","), "autovacuum_vacuum_threshold=10000") {
		t.Errorf("messages after start-up: %v", got)
	}
	// The monitors' own queries are traced under bounded names.
	if v, _ := sample(t, reg, "parley_db_query_duration_seconds", map[string]string{"query": "monitor_vacuum_health", "target": "primary"}); v < 1 {
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
