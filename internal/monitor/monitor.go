// Package monitor watches Parley's databases and exports what it sees as
// Prometheus metrics (names in docs/monitoring.md and the metrics contract):
//
//   - AutovacuumConfig applies the per-table autovacuum settings declared in
//     code at start-up and reports drift when someone changes them by hand;
//   - VacuumHealth polls bloat estimates, dead/live tuples, vacuum and analyze
//     ages, transaction-id age and running vacuums;
//   - QueryPerformance is a pgx tracer that times every query by name;
//   - PgBouncer polls PgBouncer's admin console for pool saturation, waiting
//     clients, queue wait and throughput.
//
// Monitors (New) runs the polling monitors together, each in its own
// goroutine, and summarises them for /admin/status. Every monitor is also
// usable on its own. Metrics go to the prometheus.Registerer passed in, never
// to the global default registry.
package monitor

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/promreg"
)

// DB is what the monitors need from a database handle: *pgxpool.Pool and
// *pgx.Conn both satisfy it. Every monitor query runs in its own short
// transaction with SET LOCAL timeouts, so the handle may go through
// PgBouncer in transaction pooling.
type DB interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// Config configures the set of polling monitors started by New.
type Config struct {
	// Logger receives errors (at most one line per monitor per interval) and
	// notable events. nil discards.
	Logger *slog.Logger
	// Registerer receives the metrics. nil keeps them unregistered (Summary
	// still works); pass a fresh prometheus.NewRegistry() in tests.
	Registerer prometheus.Registerer
	// Primary is a handle on the primary database. nil disables
	// AutovacuumConfig and VacuumHealth.
	Primary DB
	// PgBouncerAdminURL is PgBouncer's admin console
	// (postgres://user:pw@host:port/pgbouncer). Empty disables the PgBouncer
	// monitor.
	PgBouncerAdminURL string

	// Per-monitor options; zero values take the defaults. Logger, Registerer,
	// DB and AdminURL inside them are filled from the fields above when unset.
	Autovacuum   AutovacuumOptions
	VacuumHealth VacuumHealthOptions
	PgBouncer    PgBouncerOptions

	// Queries, when set, is included in Summary (the tracer itself is created
	// earlier, before the pools, with NewQueryPerformance).
	Queries *QueryPerformance
}

// Monitors runs the polling monitors. Create it with New, start it with Run.
type Monitors struct {
	log        *slog.Logger
	autovacuum *AutovacuumConfig
	vacuum     *VacuumHealth
	pgbouncer  *PgBouncer
	queries    *QueryPerformance
}

// New builds the monitors and registers their metrics. It does not touch the
// databases; Run does.
func New(cfg Config) (*Monitors, error) {
	m := &Monitors{log: orDiscard(cfg.Logger), queries: cfg.Queries}
	if cfg.Primary != nil {
		av := cfg.Autovacuum
		fillCommon(&av.Logger, &av.Registerer, cfg.Logger, cfg.Registerer)
		if av.DB == nil {
			av.DB = cfg.Primary
		}
		var err error
		if m.autovacuum, err = NewAutovacuumConfig(av); err != nil {
			return nil, err
		}
		vh := cfg.VacuumHealth
		fillCommon(&vh.Logger, &vh.Registerer, cfg.Logger, cfg.Registerer)
		if vh.DB == nil {
			vh.DB = cfg.Primary
		}
		if m.vacuum, err = NewVacuumHealth(vh); err != nil {
			return nil, err
		}
	}
	pb := cfg.PgBouncer
	if pb.AdminURL == "" {
		pb.AdminURL = cfg.PgBouncerAdminURL
	}
	if pb.AdminURL != "" {
		fillCommon(&pb.Logger, &pb.Registerer, cfg.Logger, cfg.Registerer)
		var err error
		if m.pgbouncer, err = NewPgBouncer(pb); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func fillCommon(log **slog.Logger, reg *prometheus.Registerer, defLog *slog.Logger, defReg prometheus.Registerer) {
	if *log == nil {
		*log = defLog
	}
	if *reg == nil {
		*reg = defReg
	}
}

// Autovacuum returns the AutovacuumConfig monitor (nil without a primary).
func (m *Monitors) Autovacuum() *AutovacuumConfig { return m.autovacuum }

// VacuumHealth returns the VacuumHealth monitor (nil without a primary).
func (m *Monitors) VacuumHealth() *VacuumHealth { return m.vacuum }

// PgBouncer returns the PgBouncer monitor (nil without an admin URL).
func (m *Monitors) PgBouncer() *PgBouncer { return m.pgbouncer }

// Run runs every monitor in its own goroutine until ctx ends and returns
// nil once they have all stopped. The autovacuum goroutine starts first and
// applies the declared settings before its periodic checks (bounded by lock
// and statement timeouts: a missing or locked table is logged, never fatal);
// the other monitors do not wait for it. Call it in its own goroutine:
// `go mon.Run(ctx)`.
func (m *Monitors) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	start := func(run func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = run(ctx) // errors are logged and exported by each monitor
		}()
	}
	if m.autovacuum != nil {
		start(m.autovacuum.Run)
	}
	if m.vacuum != nil {
		start(m.vacuum.Run)
	}
	if m.pgbouncer != nil {
		start(m.pgbouncer.Run)
	}
	wg.Wait()
	return nil
}

// Summary is a short, JSON-ready picture of every monitor for /admin/status.
// Disabled monitors are omitted.
type Summary struct {
	Autovacuum   *AutovacuumSummary   `json:"autovacuum,omitempty"`
	VacuumHealth *VacuumHealthSummary `json:"vacuum_health,omitempty"`
	PgBouncer    *PgBouncerSummary    `json:"pgbouncer,omitempty"`
	Queries      *QueriesSummary      `json:"queries,omitempty"`
}

// Summary reports the latest state of every monitor. It never blocks on the
// database.
func (m *Monitors) Summary() Summary {
	var s Summary
	if m.autovacuum != nil {
		v := m.autovacuum.Summary()
		s.Autovacuum = &v
	}
	if m.vacuum != nil {
		v := m.vacuum.Summary()
		s.VacuumHealth = &v
	}
	if m.pgbouncer != nil {
		v := m.pgbouncer.Summary()
		s.PgBouncer = &v
	}
	if m.queries != nil {
		v := m.queries.Summary()
		s.Queries = &v
	}
	return s
}

// ---- shared machinery ----

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

func newLastSuccess(reg prometheus.Registerer) (*prometheus.GaugeVec, error) {
	return promreg.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "parley_monitor_last_success_timestamp_seconds",
		Help: "Unix time of the last successful run of each database monitor.",
	}, []string{"monitor"}))
}

// loop runs a monitor's poll every interval and keeps its health: the
// last-success gauge, the last error, and logging that says each distinct
// failure once per interval at most (a repeated identical error only every
// repeatLog) and says when the monitor recovers.
type loop struct {
	name        string
	interval    time.Duration
	log         *slog.Logger
	lastSuccess prometheus.Gauge

	mu        sync.Mutex
	okAt      time.Time
	errAt     time.Time
	lastErr   string
	loggedAt  time.Time
	suppressN int
}

const repeatLog = 5 * time.Minute

func newLoop(name string, interval time.Duration, log *slog.Logger, lastSuccess *prometheus.GaugeVec) *loop {
	return &loop{name: name, interval: interval, log: log, lastSuccess: lastSuccess.WithLabelValues(name)}
}

// run polls at once, then every interval, until ctx ends.
func (l *loop) run(ctx context.Context, poll func(context.Context) error) error {
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		err := poll(ctx)
		if ctx.Err() != nil {
			return nil
		}
		l.record(err)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// record notes the outcome of one poll.
func (l *loop) record(err error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		if l.lastErr != "" {
			l.log.Info("monitor recovered", "monitor", l.name, "failing_since", l.errAt)
		}
		l.okAt, l.lastErr, l.suppressN = now, "", 0
		l.lastSuccess.Set(float64(now.UnixNano()) / 1e9)
		return
	}
	msg := err.Error()
	if msg != l.lastErr {
		l.errAt = now
	}
	if msg != l.lastErr || now.Sub(l.loggedAt) >= repeatLog {
		l.log.Warn("monitor failed", "monitor", l.name, "err", msg, "repeats_suppressed", l.suppressN)
		l.loggedAt, l.suppressN = now, 0
	} else {
		l.suppressN++
	}
	l.lastErr = msg
}

// health is a loop's state for summaries.
type health struct {
	LastSuccess *time.Time `json:"last_success,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
}

func (l *loop) health() health {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := health{LastError: l.lastErr}
	if !l.okAt.IsZero() {
		t := l.okAt.UTC()
		h.LastSuccess = &t
	}
	return h
}

// inTx runs fn in one transaction on db with local statement and lock
// timeouts (SET LOCAL, so it is safe through PgBouncer's transaction
// pooling). The context gets a little slack beyond the statement timeout so
// the server-side timeout normally fires first, with a clear error.
func inTx(ctx context.Context, db DB, readOnly bool, statementTimeout, lockTimeout time.Duration, fn func(pgx.Tx) error) error {
	ctx, cancel := context.WithTimeout(ctx, statementTimeout+2*time.Second)
	defer cancel()
	opts := pgx.TxOptions{}
	if readOnly {
		opts.AccessMode = pgx.ReadOnly
	}
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true)`,
		pgDuration(statementTimeout), pgDuration(lockTimeout)); err != nil {
		return fmt.Errorf("set timeouts: %w", err)
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// pgDuration renders d as a PostgreSQL duration setting ("0" disables).
func pgDuration(d time.Duration) string {
	if d <= 0 {
		return "0"
	}
	ms := d.Milliseconds()
	if ms == 0 {
		ms = 1
	}
	return fmt.Sprintf("%dms", ms)
}
