package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// VacuumHealthOptions configures VacuumHealth.
type VacuumHealthOptions struct {
	DB         DB // the primary (statistics and bloat are per server)
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Interval between polls (default 60 s).
	Interval time.Duration
	// Schema whose tables are watched (default "public").
	Schema string
	// MaxTables caps the label set: the largest tables (by total size) win
	// (default 50).
	MaxTables int
	// StatementTimeout bounds the poll's query (default 5 s).
	StatementTimeout time.Duration
}

// TableHealth is one table's vacuum health at the latest poll.
type TableHealth struct {
	Table string `json:"table"`
	// BloatRatio and BloatBytes estimate the space beyond what the live rows
	// need at the table's fillfactor (ioguix's estimation from planner
	// statistics, no extension). BloatReliable is false when the statistics
	// cannot support an estimate (never analyzed, columns without
	// statistics, or the "name" type): those tables export no bloat series.
	BloatRatio    float64 `json:"bloat_ratio"`
	BloatBytes    float64 `json:"bloat_bytes"`
	BloatReliable bool    `json:"bloat_reliable"`
	LiveTuples    float64 `json:"live_tuples"`
	DeadTuples    float64 `json:"dead_tuples"`
	// LastVacuum is the later of the last manual and the last autovacuum;
	// nil when the statistics know of neither.
	LastVacuum  *time.Time `json:"last_vacuum,omitempty"`
	LastAnalyze *time.Time `json:"last_analyze,omitempty"`
	// StatsSince is when the statistics that would record a vacuum began
	// (the database's stats reset, else the server's start): a table never
	// vacuumed (analyzed) is at least that old in vacuum (analyze) age.
	StatsSince time.Time `json:"-"`
	// FrozenXIDAge is age(relfrozenxid): transactions since the table was
	// last fully frozen (wraparound protection forces a vacuum at
	// autovacuum_freeze_max_age, 200M by default).
	FrozenXIDAge  float64 `json:"frozenxid_age"`
	VacuumRunning bool    `json:"vacuum_running"`
}

// VacuumHealthSummary is VacuumHealth's part of /admin/status: the worst
// table by each measure.
type VacuumHealthSummary struct {
	health
	Tables          int      `json:"tables"`
	MostBloated     string   `json:"most_bloated,omitempty"`
	MaxBloatRatio   float64  `json:"max_bloat_ratio"`
	MostDead        string   `json:"most_dead_tuples,omitempty"`
	MaxDeadTuples   float64  `json:"max_dead_tuples"`
	OldestVacuumed  string   `json:"oldest_vacuum,omitempty"`
	MaxVacuumAge    float64  `json:"max_vacuum_age_seconds"`
	MaxFrozenXIDAge float64  `json:"max_frozenxid_age"`
	VacuumRunning   []string `json:"vacuum_running,omitempty"`
	BloatUnknown    []string `json:"bloat_unavailable,omitempty"`
}

// VacuumHealth polls the primary's table statistics and exports them per
// table (parley_db_table_bloat_ratio, _bloat_bytes, parley_db_dead_tuples,
// parley_db_live_tuples, parley_db_last_vacuum_age_seconds,
// parley_db_last_analyze_age_seconds, parley_db_frozenxid_age,
// parley_db_vacuum_running) plus the label-free
// parley_db_table_bloat_unavailable_tables. Ages are computed at scrape time
// from the polled timestamps, so they keep growing between polls; a table
// never vacuumed (or analyzed) as far as the statistics know exports the time
// since the statistics began, a lower bound of its true age — so a table that
// was never vacuumed is the first to trip a vacuum-age alert, not invisible. After a failed poll the previous values stay (the monitor's
// last-success timestamp shows how old they are).
type VacuumHealth struct {
	opts VacuumHealthOptions
	log  *slog.Logger
	loop *loop

	mu     sync.RWMutex
	tables []TableHealth
}

var (
	descBloatRatio = prometheus.NewDesc("parley_db_table_bloat_ratio",
		"Estimated share (0-1) of the table's pages beyond what its live rows need at its fillfactor; NaN while its statistics cannot support an estimate.", []string{"table"}, nil)
	descBloatBytes = prometheus.NewDesc("parley_db_table_bloat_bytes",
		"Estimated bytes of the table beyond what its live rows need at its fillfactor; NaN while its statistics cannot support an estimate.", []string{"table"}, nil)
	descBloatUnknown = prometheus.NewDesc("parley_db_table_bloat_unavailable_tables",
		"Watched tables whose statistics cannot support a bloat estimate (never analyzed, columns without statistics).", nil, nil)
	descDead = prometheus.NewDesc("parley_db_dead_tuples",
		"Estimated dead tuples (pg_stat_user_tables.n_dead_tup).", []string{"table"}, nil)
	descLive = prometheus.NewDesc("parley_db_live_tuples",
		"Estimated live tuples (pg_stat_user_tables.n_live_tup).", []string{"table"}, nil)
	descVacuumAge = prometheus.NewDesc("parley_db_last_vacuum_age_seconds",
		"Seconds since the table's latest vacuum, manual or auto.", []string{"table"}, nil)
	descAnalyzeAge = prometheus.NewDesc("parley_db_last_analyze_age_seconds",
		"Seconds since the table's latest analyze, manual or auto.", []string{"table"}, nil)
	descFrozenXID = prometheus.NewDesc("parley_db_frozenxid_age",
		"age(relfrozenxid): transactions since the table was last frozen.", []string{"table"}, nil)
	descVacuumRunning = prometheus.NewDesc("parley_db_vacuum_running",
		"1 while a vacuum of the table is in progress (pg_stat_progress_vacuum), else 0.", []string{"table"}, nil)
)

// NewVacuumHealth registers VacuumHealth's metrics.
func NewVacuumHealth(opts VacuumHealthOptions) (*VacuumHealth, error) {
	if opts.DB == nil {
		return nil, errors.New("vacuum health: no database")
	}
	if opts.Interval <= 0 {
		opts.Interval = 60 * time.Second
	}
	if opts.Schema == "" {
		opts.Schema = "public"
	}
	if opts.MaxTables <= 0 {
		opts.MaxTables = 50
	}
	if opts.StatementTimeout <= 0 {
		opts.StatementTimeout = 5 * time.Second
	}
	ls, err := newLastSuccess(opts.Registerer)
	if err != nil {
		return nil, err
	}
	log := orDiscard(opts.Logger)
	v := &VacuumHealth{opts: opts, log: log, loop: newLoop("vacuum_health", opts.Interval, log, ls)}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register((*vacuumCollector)(v)); err != nil {
			return nil, fmt.Errorf("vacuum health: register metrics: %w", err)
		}
	}
	return v, nil
}

// Run polls every Interval until ctx ends.
func (v *VacuumHealth) Run(ctx context.Context) error {
	return v.loop.run(ctx, func(ctx context.Context) error {
		_, err := v.poll(ctx)
		return err
	})
}

// Poll reads every watched table's health once, updates the metrics and
// returns the tables.
func (v *VacuumHealth) Poll(ctx context.Context) ([]TableHealth, error) {
	tables, err := v.poll(ctx)
	if ctx.Err() == nil {
		v.loop.record(err)
	}
	return tables, err
}

func (v *VacuumHealth) poll(ctx context.Context) ([]TableHealth, error) {
	tables, err := v.query(WithQueryName(ctx, "monitor_vacuum_health"))
	if err != nil {
		return nil, fmt.Errorf("vacuum health: %w", err)
	}
	v.mu.Lock()
	v.tables = tables
	v.mu.Unlock()
	return tables, nil
}

// vacuumHealthSQL estimates table bloat with the method of ioguix's
// table_bloat.sql (https://github.com/ioguix/pgsql-bloat-estimation, BSD
// 2-clause, © Jehan-Guillaume de Rorthais): from pg_stats' average column
// widths and null fractions it computes the tuple size, the pages the
// table's reltuples need at its fillfactor, and compares with relpages
// (heap + TOAST). It needs no extension, reads only catalogs and statistics,
// and is as good as the latest ANALYZE/VACUUM (which set reltuples and
// relpages). is_na marks tables the method cannot estimate.
//
// $1 = schema, $2 = max tables (the largest by total size).
const vacuumHealthSQL = `
WITH tbl AS (
    SELECT c.oid, c.relname,
           c.reltuples::float8 AS reltuples,
           c.relpages::float8 AS heappages,
           coalesce(toast.relpages, 0)::float8 AS toastpages,
           coalesce(toast.reltuples, 0)::float8 AS toasttuples,
           coalesce(substring(array_to_string(c.reloptions, ' ') FROM 'fillfactor=([0-9]+)')::int, 100) AS fillfactor,
           age(c.relfrozenxid)::float8 AS xid_age
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_class toast ON toast.oid = c.reltoastrelid
    WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')
    ORDER BY pg_total_relation_size(c.oid) DESC NULLS LAST, c.relname
    LIMIT $2
), cols AS (
    SELECT t.oid,
           23 + CASE WHEN max(coalesce(s.null_frac, 0)) > 0 THEN (7 + count(s.attname)) / 8 ELSE 0 END AS tpl_hdr_size,
           sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 0))::float8 AS tpl_data_size,
           bool_or(a.atttypid = 'pg_catalog.name'::regtype) OR count(*) <> count(s.attname) AS is_na
    FROM tbl t
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_stats s ON s.schemaname = $1 AND s.tablename = t.relname
                        AND NOT s.inherited AND s.attname = a.attname
    GROUP BY t.oid
), consts AS (
    SELECT current_setting('block_size')::float8 AS bs, 24 AS page_hdr,
           CASE WHEN version() ~ 'mingw32|64-bit|x86_64|ppc64|ia64|amd64|aarch64|arm64' THEN 8 ELSE 4 END AS ma
), sized AS (
    SELECT t.oid, t.reltuples, t.heappages + t.toastpages AS tblpages, t.toasttuples, t.fillfactor,
           k.bs, k.page_hdr,
           coalesce(c.is_na, true) OR t.reltuples < 0 AS is_na,
           4 + c.tpl_hdr_size + c.tpl_data_size + 2 * k.ma
             - CASE WHEN c.tpl_hdr_size % k.ma = 0 THEN k.ma ELSE c.tpl_hdr_size % k.ma END
             - CASE WHEN ceil(c.tpl_data_size)::int % k.ma = 0 THEN k.ma ELSE ceil(c.tpl_data_size)::int % k.ma END
             AS tpl_size
    FROM tbl t
    CROSS JOIN consts k
    LEFT JOIN cols c ON c.oid = t.oid
), bloat AS (
    SELECT oid, is_na, tblpages, bs,
           CASE WHEN is_na THEN 0
                ELSE ceil(reltuples / ((bs - page_hdr) * fillfactor / (tpl_size * 100))) + ceil(toasttuples / 4)
           END AS est_pages_ff
    FROM sized
)
SELECT t.relname,
       b.is_na,
       CASE WHEN b.is_na THEN 0 ELSE greatest(b.tblpages - b.est_pages_ff, 0) * b.bs END AS bloat_bytes,
       CASE WHEN b.is_na OR b.tblpages = 0 THEN 0 ELSE greatest(b.tblpages - b.est_pages_ff, 0) / b.tblpages END AS bloat_ratio,
       coalesce(st.n_live_tup, 0)::float8,
       coalesce(st.n_dead_tup, 0)::float8,
       greatest(st.last_vacuum, st.last_autovacuum),
       greatest(st.last_analyze, st.last_autoanalyze),
       t.xid_age,
       EXISTS (SELECT 1 FROM pg_stat_progress_vacuum p WHERE p.relid = t.oid),
       (SELECT coalesce(d.stats_reset, pg_postmaster_start_time()) FROM pg_stat_database d WHERE d.datname = current_database())
FROM tbl t
JOIN bloat b ON b.oid = t.oid
LEFT JOIN pg_stat_user_tables st ON st.relid = t.oid
ORDER BY t.relname`

func (v *VacuumHealth) query(ctx context.Context) ([]TableHealth, error) {
	var tables []TableHealth
	err := inTx(ctx, v.opts.DB, true, v.opts.StatementTimeout, v.opts.StatementTimeout, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, vacuumHealthSQL, v.opts.Schema, v.opts.MaxTables)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var h TableHealth
			var isNA bool
			if err := rows.Scan(&h.Table, &isNA, &h.BloatBytes, &h.BloatRatio, &h.LiveTuples, &h.DeadTuples,
				&h.LastVacuum, &h.LastAnalyze, &h.FrozenXIDAge, &h.VacuumRunning, &h.StatsSince); err != nil {
				return err
			}
			h.BloatReliable = !isNA
			tables = append(tables, h)
		}
		return rows.Err()
	})
	return tables, err
}

// Tables returns the latest polled state of every watched table.
func (v *VacuumHealth) Tables() []TableHealth {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return slices.Clone(v.tables)
}

// Summary reports the worst table by each measure.
func (v *VacuumHealth) Summary() VacuumHealthSummary {
	s := VacuumHealthSummary{health: v.loop.health()}
	now := time.Now()
	for _, t := range v.Tables() {
		s.Tables++
		if !t.BloatReliable {
			s.BloatUnknown = append(s.BloatUnknown, t.Table)
		} else if t.BloatRatio > s.MaxBloatRatio {
			s.MostBloated, s.MaxBloatRatio = t.Table, t.BloatRatio
		}
		if t.DeadTuples > s.MaxDeadTuples {
			s.MostDead, s.MaxDeadTuples = t.Table, t.DeadTuples
		}
		if t.LastVacuum != nil {
			if age := now.Sub(*t.LastVacuum).Seconds(); age > s.MaxVacuumAge {
				s.OldestVacuumed, s.MaxVacuumAge = t.Table, age
			}
		}
		s.MaxFrozenXIDAge = max(s.MaxFrozenXIDAge, t.FrozenXIDAge)
		if t.VacuumRunning {
			s.VacuumRunning = append(s.VacuumRunning, t.Table)
		}
	}
	return s
}

// vacuumCollector exports VacuumHealth's latest poll at scrape time.
type vacuumCollector VacuumHealth

func (c *vacuumCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBloatRatio, descBloatBytes, descBloatUnknown, descDead, descLive,
		descVacuumAge, descAnalyzeAge, descFrozenXID, descVacuumRunning} {
		ch <- d
	}
}

func (c *vacuumCollector) Collect(ch chan<- prometheus.Metric) {
	tables := (*VacuumHealth)(c).Tables()
	now := time.Now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	unknown := 0
	for _, t := range tables {
		if t.BloatReliable {
			gauge(descBloatRatio, t.BloatRatio, t.Table)
			gauge(descBloatBytes, t.BloatBytes, t.Table)
		} else {
			// No estimate: NaN, not a number that could pass for one, so
			// the families exist from the first poll (a fresh database is
			// never analyzed) and comparisons in alert rules stay false.
			gauge(descBloatRatio, math.NaN(), t.Table)
			gauge(descBloatBytes, math.NaN(), t.Table)
			unknown++
		}
		gauge(descDead, t.DeadTuples, t.Table)
		gauge(descLive, t.LiveTuples, t.Table)
		gauge(descVacuumAge, ageSince(now, t.LastVacuum, t.StatsSince), t.Table)
		gauge(descAnalyzeAge, ageSince(now, t.LastAnalyze, t.StatsSince), t.Table)
		gauge(descFrozenXID, t.FrozenXIDAge, t.Table)
		running := 0.0
		if t.VacuumRunning {
			running = 1
		}
		gauge(descVacuumRunning, running, t.Table)
	}
	if tables != nil {
		gauge(descBloatUnknown, float64(unknown))
	}
}

// ageSince is the seconds since last, or since statsSince when the
// statistics know of no such event (a lower bound).
func ageSince(now time.Time, last *time.Time, statsSince time.Time) float64 {
	if last != nil {
		return max(now.Sub(*last).Seconds(), 0)
	}
	return max(now.Sub(statsSince).Seconds(), 0)
}
