package monitor

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/stack/stacktest"
)

func TestCompareReloptions(t *testing.T) {
	want := map[string]string{"autovacuum_vacuum_scale_factor": "0.0", "autovacuum_vacuum_threshold": "10000"}
	tests := []struct {
		name      string
		have      []string
		diffs     int
		wantReset []string
	}{
		{"in line", []string{"autovacuum_vacuum_scale_factor=0.0", "autovacuum_vacuum_threshold=10000"}, 0, nil},
		{"numerically equal", []string{"autovacuum_vacuum_scale_factor=0", "autovacuum_vacuum_threshold=1e4"}, 0, nil},
		{"other reloptions ignored", []string{"fillfactor=80", "autovacuum_vacuum_scale_factor=0.0", "autovacuum_vacuum_threshold=10000"}, 0, nil},
		{"changed", []string{"autovacuum_vacuum_scale_factor=0.2", "autovacuum_vacuum_threshold=10000"}, 1, nil},
		{"missing", []string{"autovacuum_vacuum_threshold=10000"}, 1, nil},
		{"undeclared autovacuum key", []string{"autovacuum_vacuum_scale_factor=0.0", "autovacuum_vacuum_threshold=10000", "autovacuum_enabled=false"}, 1, []string{"autovacuum_enabled"}},
		{"nothing set", nil, 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diffs, reset := compareReloptions(want, tt.have)
			if len(diffs) != tt.diffs || !slices.Equal(reset, tt.wantReset) {
				t.Errorf("diffs %q reset %q; want %d diffs, reset %q", diffs, reset, tt.diffs, tt.wantReset)
			}
		})
	}
}

func TestSameSetting(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		same bool
	}{
		{"0", "0.0", true}, {"1", "1.0", true}, {"0.05", "0.050", true}, {"0.05", "0.5", false},
		{"on", "true", true}, {"off", "false", true}, {"on", "off", false}, {"abc", "abc", true},
	} {
		if got := sameSetting(tt.a, tt.b); got != tt.same {
			t.Errorf("sameSetting(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.same)
		}
	}
}

func TestNewAutovacuumConfigRejectsBadDeclarations(t *testing.T) {
	pool := &pgxpool.Pool{} // never used: validation fails first
	for _, tables := range [][]TableAutovacuum{
		{{Table: "messages; DROP TABLE users", Settings: nil}},
		{{Table: "messages", Settings: map[string]string{"fillfactor": "80"}}},
		{{Table: "messages", Settings: map[string]string{"autovacuum_enabled": "off'); DROP TABLE users; --"}}},
		{{Table: "messages"}, {Table: "messages"}},
	} {
		if _, err := NewAutovacuumConfig(AutovacuumOptions{DB: pool, Tables: tables}); err == nil {
			t.Errorf("declaration %v accepted", tables)
		}
	}
}

func reloptions(t *testing.T, ctx context.Context, pool *pgxpool.Pool, table string) []string {
	t.Helper()
	var opts []string
	if err := pool.QueryRow(ctx, `SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = $1::regclass`, table).Scan(&opts); err != nil {
		t.Fatal(err)
	}
	slices.Sort(opts)
	return opts
}

func stateOf(states []TableAutovacuumState, table string) TableAutovacuumState {
	for _, s := range states {
		if s.Table == table {
			return s
		}
	}
	return TableAutovacuumState{}
}

// The default declaration is what the migration sets: on a migrated
// database every table is in line and nothing is changed.
func TestAutovacuumDefaultsMatchMigration(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	_, pool := migratedDB(t)
	reg := prometheus.NewRegistry()
	av, err := NewAutovacuumConfig(AutovacuumOptions{DB: pool, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	states, err := av.Apply(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"messages", "conversations", "conversation_members"} {
		st := stateOf(states, table)
		if st.State != "ok" || st.Applied {
			t.Errorf("%s: %+v; want ok and unchanged (declaration must match 0001_schema.sql)", table, st)
		}
		if v := stacktest.MustMetric(t, reg, "parley_db_autovacuum_settings_drift", map[string]string{"table": table}); v != 0 {
			t.Errorf("%s drift = %v", table, v)
		}
	}
	if _, ok := stacktest.Metric(t, reg, "parley_monitor_last_success_timestamp_seconds", map[string]string{"monitor": "autovacuum_config"}); !ok {
		t.Error("no last-success timestamp")
	}
}

func TestAutovacuumAppliesIsIdempotentAndDetectsDrift(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	_, pool := migratedDB(t)
	// Start from tables without the declared settings, one with an
	// undeclared autovacuum setting.
	mustExec(t, ctx, pool, `ALTER TABLE messages RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
		autovacuum_vacuum_insert_scale_factor, autovacuum_vacuum_insert_threshold, autovacuum_analyze_scale_factor,
		autovacuum_analyze_threshold, autovacuum_vacuum_cost_delay)`)
	mustExec(t, ctx, pool, `ALTER TABLE conversations SET (autovacuum_enabled = false)`)

	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	tables := append(DefaultAutovacuumTables(), TableAutovacuum{Table: "not_created_yet",
		Settings: map[string]string{"autovacuum_vacuum_threshold": "500"}})
	av, err := NewAutovacuumConfig(AutovacuumOptions{DB: pool, Registerer: reg, Logger: logs.logger(), Tables: tables})
	if err != nil {
		t.Fatal(err)
	}
	drift := func(table string) float64 {
		return stacktest.MustMetric(t, reg, "parley_db_autovacuum_settings_drift", map[string]string{"table": table})
	}

	// Check only reports.
	states, err := av.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := stateOf(states, "messages"); st.State != "drift" || len(st.Drift) != 7 {
		t.Errorf("messages before apply: %+v", st)
	}
	if drift("messages") != 1 || drift("conversations") != 1 || drift("conversation_members") != 0 {
		t.Errorf("drift gauges before apply: messages %v conversations %v members %v",
			drift("messages"), drift("conversations"), drift("conversation_members"))
	}
	if got := reloptions(t, ctx, pool, "messages"); len(got) != 0 {
		t.Errorf("Check changed messages: %v", got)
	}

	// Apply brings the tables in line; a missing table is reported, not fatal.
	states, err = av.Apply(ctx)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if st := stateOf(states, "messages"); st.State != "ok" || !st.Applied {
		t.Errorf("messages after apply: %+v", st)
	}
	if st := stateOf(states, "not_created_yet"); st.State != "missing" {
		t.Errorf("missing table: %+v", st)
	}
	if _, ok := stacktest.Metric(t, reg, "parley_db_autovacuum_settings_drift", map[string]string{"table": "not_created_yet"}); ok {
		t.Error("missing table exports a drift series")
	}
	if !strings.Contains(logs.String(), "does not exist yet") {
		t.Errorf("missing table not logged:\n%s", logs)
	}
	wantMessages := []string{
		"autovacuum_analyze_scale_factor=0.0", "autovacuum_analyze_threshold=10000",
		"autovacuum_vacuum_cost_delay=1", "autovacuum_vacuum_insert_scale_factor=0.0",
		"autovacuum_vacuum_insert_threshold=10000", "autovacuum_vacuum_scale_factor=0.0",
		"autovacuum_vacuum_threshold=10000",
	}
	if got := reloptions(t, ctx, pool, "messages"); !slices.Equal(got, wantMessages) {
		t.Errorf("messages reloptions = %v, want %v", got, wantMessages)
	}
	wantConv := []string{"autovacuum_analyze_scale_factor=0.05", "autovacuum_vacuum_scale_factor=0.05", "fillfactor=80"}
	if got := reloptions(t, ctx, pool, "conversations"); !slices.Equal(got, wantConv) {
		t.Errorf("conversations reloptions = %v, want %v (undeclared autovacuum_enabled reset, fillfactor kept)", got, wantConv)
	}
	if drift("messages") != 0 || drift("conversations") != 0 {
		t.Error("drift gauges not 0 after apply")
	}

	// Idempotent: a second apply changes nothing.
	states, err = av.Apply(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range states {
		if st.Applied {
			t.Errorf("second apply changed %s: %+v", st.Table, st)
		}
	}

	// Someone changes a setting by hand: the check reports it and leaves it.
	mustExec(t, ctx, pool, `ALTER TABLE messages SET (autovacuum_vacuum_threshold = 5000)`)
	states, err = av.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := stateOf(states, "messages")
	if st.State != "drift" || !slices.Equal(st.Drift, []string{"autovacuum_vacuum_threshold=5000 (want 10000)"}) {
		t.Errorf("after manual change: %+v", st)
	}
	if drift("messages") != 1 {
		t.Error("drift gauge not 1 after manual change")
	}
	if !slices.Contains(reloptions(t, ctx, pool, "messages"), "autovacuum_vacuum_threshold=5000") {
		t.Error("check re-applied; it should only report")
	}
	sum := av.Summary()
	if stateOf(sum.Tables, "messages").State != "drift" || sum.LastSuccess == nil {
		t.Errorf("summary: %+v", sum)
	}
}

// A table locked by a long transaction does not hold Apply for longer than
// the lock timeout, and the other tables are still applied.
func TestAutovacuumApplyDoesNotWaitForLocks(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	_, pool := migratedDB(t)
	mustExec(t, ctx, pool, `ALTER TABLE messages RESET (autovacuum_vacuum_threshold)`)
	mustExec(t, ctx, pool, `ALTER TABLE conversations RESET (autovacuum_vacuum_scale_factor)`)

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	mustExec(t, ctx, tx, `LOCK TABLE messages IN ACCESS EXCLUSIVE MODE`)

	av, err := NewAutovacuumConfig(AutovacuumOptions{DB: pool, Registerer: prometheus.NewRegistry(), LockTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	states, err := av.Apply(ctx)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("apply took %v with a locked table", took)
	}
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Errorf("apply error = %v, want a lock timeout on messages", err)
	}
	if st := stateOf(states, "messages"); st.State != "error" {
		t.Errorf("messages: %+v", st)
	}
	if st := stateOf(states, "conversations"); st.State != "ok" || !st.Applied {
		t.Errorf("conversations: %+v", st)
	}

	// Once the lock is gone, the next periodic check applies what start-up
	// could not (the declaration was never applied to messages).
	_ = tx.Rollback(ctx)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = av.Run(runCtx) }()
	eventually(t, 10*time.Second, "messages applied by the periodic check", func() bool {
		return slices.Contains(reloptions(t, ctx, pool, "messages"), "autovacuum_vacuum_threshold=10000")
	})
	cancel()
	<-done
}
