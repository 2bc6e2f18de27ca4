package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/promreg"
)

// TableAutovacuum declares the autovacuum storage parameters one table must
// have. The declaration owns every reloption whose name starts with
// "autovacuum_": declared ones must have the declared value, undeclared ones
// must be absent (so an empty Settings map means "server defaults"). Other
// reloptions (fillfactor, …) belong to the migrations and are ignored.
type TableAutovacuum struct {
	Table    string            // table name in the monitored schema
	Settings map[string]string // reloption name → value, e.g. "autovacuum_vacuum_threshold": "10000"
}

// DefaultAutovacuumTables is Parley's declaration, the same values as
// internal/postgres/migrations/0001_schema.sql sets: the append-heavy
// messages table vacuums and analyzes every 10k rows (not a fraction of a
// table that only grows) and keeps its visibility map fresh for index-only
// scans; the two tables updated in place by every send vacuum at 5 %.
func DefaultAutovacuumTables() []TableAutovacuum {
	return []TableAutovacuum{
		{Table: "messages", Settings: map[string]string{
			"autovacuum_vacuum_scale_factor":        "0.0",
			"autovacuum_vacuum_threshold":           "10000",
			"autovacuum_vacuum_insert_scale_factor": "0.0",
			"autovacuum_vacuum_insert_threshold":    "10000",
			"autovacuum_analyze_scale_factor":       "0.0",
			"autovacuum_analyze_threshold":          "10000",
			"autovacuum_vacuum_cost_delay":          "1",
		}},
		{Table: "conversations", Settings: map[string]string{
			"autovacuum_vacuum_scale_factor":  "0.05",
			"autovacuum_analyze_scale_factor": "0.05",
		}},
		{Table: "conversation_members", Settings: map[string]string{
			"autovacuum_vacuum_scale_factor":  "0.05",
			"autovacuum_analyze_scale_factor": "0.05",
		}},
	}
}

// AutovacuumOptions configures AutovacuumConfig.
type AutovacuumOptions struct {
	DB         DB
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Tables is the declaration; nil means DefaultAutovacuumTables().
	Tables []TableAutovacuum
	// Schema holding the tables (default "public").
	Schema string
	// Interval between drift checks (default 5 minutes).
	Interval time.Duration
	// LockTimeout bounds the wait for ALTER TABLE's lock (default 2 s), so a
	// long transaction on the table never queues other queries behind us.
	LockTimeout time.Duration
	// StatementTimeout bounds each statement (default 5 s).
	StatementTimeout time.Duration
	// ReapplyOnDrift makes periodic checks re-apply the declaration when they
	// find drift. Off by default: a hand-made change is usually an operator
	// at work, so checks only report it (parley_db_autovacuum_settings_drift)
	// and the declaration is re-applied at the next start-up.
	ReapplyOnDrift bool
}

// AutovacuumConfig applies per-table autovacuum settings declared in code and
// reports drift from them.
//
// Apply (run first at start-up) sets what the declaration says on every
// table that exists, skipping tables already in line (no lock taken).
// Periodic checks (Run, after its own start-up Apply) report drift as the gauge
// parley_db_autovacuum_settings_drift{table} (1 = differs); they apply the
// declaration only to tables it has never been applied to yet (the table did
// not exist or was locked at start-up), or to every drifted table when
// ReapplyOnDrift is set.
type AutovacuumConfig struct {
	opts   AutovacuumOptions
	log    *slog.Logger
	tables []TableAutovacuum
	drift  *prometheus.GaugeVec
	loop   *loop

	mu      sync.Mutex
	applied map[string]bool // declaration applied (or found in line) at least once
	states  map[string]TableAutovacuumState
}

// TableAutovacuumState is one table's state after the latest check.
type TableAutovacuumState struct {
	Table string `json:"table"`
	// State is "ok", "drift", "missing" (table does not exist yet) or "error".
	State string `json:"state"`
	// Drift lists the differences, e.g. "autovacuum_vacuum_threshold=5000 (want 10000)".
	Drift []string `json:"drift,omitempty"`
	// Applied is set when this check changed the table.
	Applied bool   `json:"applied,omitempty"`
	Error   string `json:"error,omitempty"`
}

// AutovacuumSummary is AutovacuumConfig's part of /admin/status.
type AutovacuumSummary struct {
	health
	Tables []TableAutovacuumState `json:"tables"`
}

var (
	reloptKey   = regexp.MustCompile(`^[a-z_]+$`)
	reloptValue = regexp.MustCompile(`^[A-Za-z0-9_.+-]+$`)
	identifier  = regexp.MustCompile(`^[a-z_][a-z0-9_$]*$`)
)

// NewAutovacuumConfig validates the declaration and registers the drift gauge.
func NewAutovacuumConfig(opts AutovacuumOptions) (*AutovacuumConfig, error) {
	if opts.DB == nil {
		return nil, errors.New("autovacuum config: no database")
	}
	if opts.Tables == nil {
		opts.Tables = DefaultAutovacuumTables()
	}
	if opts.Schema == "" {
		opts.Schema = "public"
	}
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Minute
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 2 * time.Second
	}
	if opts.StatementTimeout <= 0 {
		opts.StatementTimeout = 5 * time.Second
	}
	if !identifier.MatchString(opts.Schema) {
		return nil, fmt.Errorf("autovacuum config: invalid schema name %q", opts.Schema)
	}
	seen := map[string]bool{}
	for _, t := range opts.Tables {
		if !identifier.MatchString(t.Table) {
			return nil, fmt.Errorf("autovacuum config: invalid table name %q", t.Table)
		}
		if seen[t.Table] {
			return nil, fmt.Errorf("autovacuum config: table %q declared twice", t.Table)
		}
		seen[t.Table] = true
		for k, v := range t.Settings {
			if !strings.HasPrefix(k, "autovacuum_") || !reloptKey.MatchString(k) {
				return nil, fmt.Errorf("autovacuum config: table %s: %q is not an autovacuum_* storage parameter", t.Table, k)
			}
			if !reloptValue.MatchString(v) {
				return nil, fmt.Errorf("autovacuum config: table %s: invalid value %q for %s", t.Table, v, k)
			}
		}
	}
	reg := opts.Registerer
	drift, err := promreg.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "parley_db_autovacuum_settings_drift",
		Help: "1 when a table's autovacuum storage parameters differ from Parley's declaration, else 0.",
	}, []string{"table"}))
	if err != nil {
		return nil, err
	}
	ls, err := newLastSuccess(reg)
	if err != nil {
		return nil, err
	}
	log := orDiscard(opts.Logger)
	return &AutovacuumConfig{
		opts: opts, log: log, tables: opts.Tables, drift: drift,
		loop:    newLoop("autovacuum_config", opts.Interval, log, ls),
		applied: map[string]bool{}, states: map[string]TableAutovacuumState{},
	}, nil
}

// Apply brings every declared table in line with the declaration and returns
// each table's state. A missing table is logged and reported as "missing", a
// lock timeout as "error"; neither stops the others. The error joins the
// per-table failures (missing tables are not failures).
func (a *AutovacuumConfig) Apply(ctx context.Context) ([]TableAutovacuumState, error) {
	states, err := a.sync(ctx, func(string) bool { return true })
	if ctx.Err() == nil {
		a.loop.record(err)
	}
	return states, err
}

// Check compares every declared table with the declaration and updates the
// drift gauge without changing anything.
func (a *AutovacuumConfig) Check(ctx context.Context) ([]TableAutovacuumState, error) {
	states, err := a.sync(ctx, func(string) bool { return false })
	if ctx.Err() == nil {
		a.loop.record(err)
	}
	return states, err
}

// Run applies the declaration at once (the start-up Apply), then checks
// every Interval until ctx ends (see the type's comment for when a check
// also applies). It returns nil when ctx ends.
func (a *AutovacuumConfig) Run(ctx context.Context) error {
	first := true
	return a.loop.run(ctx, func(ctx context.Context) error {
		applyAll := first
		first = false
		_, err := a.sync(ctx, func(table string) bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			return applyAll || a.opts.ReapplyOnDrift || !a.applied[table]
		})
		return err
	})
}

// sync checks every table and applies the declaration where apply says so.
func (a *AutovacuumConfig) sync(ctx context.Context, apply func(table string) bool) ([]TableAutovacuumState, error) {
	ctx = WithQueryName(ctx, "monitor_autovacuum")
	var errs []error
	states := make([]TableAutovacuumState, 0, len(a.tables))
	for _, t := range a.tables {
		st, err := a.syncTable(ctx, t, apply(t.Table))
		if ctx.Err() != nil {
			return states, ctx.Err()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("table %s: %w", t.Table, err))
			st.State, st.Error = "error", err.Error()
		}
		a.record(st)
		states = append(states, st)
		var pgErr *pgconn.PgError
		if err != nil && !errors.As(err, &pgErr) {
			// Not an answer from the server (unreachable, timed out): the
			// other tables would only wait for the same failure.
			break
		}
	}
	return states, errors.Join(errs...)
}

func (a *AutovacuumConfig) record(st TableAutovacuumState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.states[st.Table] = st
	switch st.State {
	case "ok":
		a.applied[st.Table] = true
		a.drift.WithLabelValues(st.Table).Set(0)
	case "drift":
		a.drift.WithLabelValues(st.Table).Set(1)
	case "missing":
		a.drift.DeleteLabelValues(st.Table)
	}
}

func (a *AutovacuumConfig) syncTable(ctx context.Context, t TableAutovacuum, apply bool) (TableAutovacuumState, error) {
	st := TableAutovacuumState{Table: t.Table}
	ident := pgx.Identifier{a.opts.Schema, t.Table}.Sanitize()
	err := inTx(ctx, a.opts.DB, false, a.opts.StatementTimeout, a.opts.LockTimeout, func(tx pgx.Tx) error {
		var exists bool
		var opts []string
		if err := tx.QueryRow(ctx, `SELECT c.oid IS NOT NULL, coalesce(c.reloptions, '{}')
			FROM (SELECT to_regclass($1) AS oid) r LEFT JOIN pg_class c ON c.oid = r.oid`, ident).Scan(&exists, &opts); err != nil {
			return fmt.Errorf("read reloptions: %w", err)
		}
		if !exists {
			st.State = "missing"
			return nil
		}
		diffs, reset := compareReloptions(t.Settings, opts)
		if len(diffs) == 0 {
			st.State = "ok"
			return nil
		}
		if !apply {
			st.State, st.Drift = "drift", diffs
			return nil
		}
		if _, err := tx.Exec(ctx, alterStatement(ident, t.Settings, reset)); err != nil {
			return fmt.Errorf("alter table: %w", err)
		}
		st.State, st.Drift, st.Applied = "ok", diffs, true
		return nil
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
			err = fmt.Errorf("table is locked by another transaction (lock_timeout %v); will retry at the next check: %w", a.opts.LockTimeout, err)
		}
		return st, err
	}
	switch {
	case st.State == "missing":
		a.log.Info("autovacuum settings: table does not exist yet; will apply when it does", "table", t.Table)
	case st.Applied:
		a.log.Info("autovacuum settings applied", "table", t.Table, "changes", st.Drift)
	case st.State == "drift":
		a.log.Warn("autovacuum settings drifted from the declaration (changed by hand?); re-applied at the next start-up",
			"table", t.Table, "drift", st.Drift)
	}
	return st, nil
}

// compareReloptions returns the differences between the declared settings
// and a table's reloptions ("key=value" strings), and the undeclared
// autovacuum_* keys present (to be RESET).
func compareReloptions(want map[string]string, have []string) (diffs, reset []string) {
	got := map[string]string{}
	for _, kv := range have {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		v, ok := got[k]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s unset (want %s)", k, want[k]))
		case !sameSetting(v, want[k]):
			diffs = append(diffs, fmt.Sprintf("%s=%s (want %s)", k, v, want[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, declared := want[k]; !declared && strings.HasPrefix(k, "autovacuum_") {
			diffs = append(diffs, fmt.Sprintf("%s=%s (want unset)", k, got[k]))
			reset = append(reset, k)
		}
	}
	return diffs, reset
}

// sameSetting compares two reloption values the way PostgreSQL reads them:
// numbers numerically ("0" = "0.0"), booleans by meaning.
func sameSetting(a, b string) bool {
	if a == b {
		return true
	}
	fa, errA := strconv.ParseFloat(a, 64)
	fb, errB := strconv.ParseFloat(b, 64)
	if errA == nil && errB == nil {
		return fa == fb
	}
	ba, okA := pgBool(a)
	bb, okB := pgBool(b)
	return okA && okB && ba == bb
}

func pgBool(s string) (v, ok bool) {
	switch strings.ToLower(s) {
	case "on", "true", "yes", "t", "y", "1":
		return true, true
	case "off", "false", "no", "f", "n", "0":
		return false, true
	}
	return false, false
}

// alterStatement builds ALTER TABLE … SET (…)[, RESET (…)]. Keys and values
// were validated by NewAutovacuumConfig; ident is already quoted.
func alterStatement(ident string, set map[string]string, reset []string) string {
	var b strings.Builder
	b.WriteString("ALTER TABLE ")
	b.WriteString(ident)
	var actions []string
	if len(set) > 0 {
		kvs := make([]string, 0, len(set))
		for _, k := range slices.Sorted(maps.Keys(set)) {
			kvs = append(kvs, k+" = '"+set[k]+"'")
		}
		actions = append(actions, " SET ("+strings.Join(kvs, ", ")+")")
	}
	if len(reset) > 0 {
		actions = append(actions, " RESET ("+strings.Join(reset, ", ")+")")
	}
	b.WriteString(strings.Join(actions, ","))
	return b.String()
}

// Summary returns the latest state of every declared table.
func (a *AutovacuumConfig) Summary() AutovacuumSummary {
	s := AutovacuumSummary{health: a.loop.health()}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, t := range a.tables {
		st, ok := a.states[t.Table]
		if !ok {
			st = TableAutovacuumState{Table: t.Table, State: "unknown"}
		}
		s.Tables = append(s.Tables, st)
	}
	return s
}
