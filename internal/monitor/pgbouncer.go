package monitor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// PgBouncerOptions configures the PgBouncer monitor.
type PgBouncerOptions struct {
	// AdminURL is the admin console, e.g.
	// postgres://parley:pw@127.0.0.1:6432/pgbouncer?sslmode=disable; the
	// user must be in PgBouncer's admin_users or stats_users.
	AdminURL   string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Interval between polls (default 15 s, like a scrape).
	Interval time.Duration
	// Timeout bounds one poll, connecting included (default 5 s).
	Timeout time.Duration
	// MaxDatabases caps the database label set: the busiest databases win,
	// then by name (default 50).
	MaxDatabases int
}

// PgBouncerDatabase is one PgBouncer database (summed over its user pools)
// at the latest poll.
type PgBouncerDatabase struct {
	Database string `json:"database"`
	PoolMode string `json:"pool_mode,omitempty"`
	PoolSize int    `json:"pool_size"`
	// Saturation is sv_active / pool_size (the fullest user pool of the
	// database); -1 when the pool size is unknown or 0.
	Saturation     float64 `json:"saturation"`
	ClientsActive  float64 `json:"clients_active"`
	ClientsWaiting float64 `json:"clients_waiting"`
	ServersActive  float64 `json:"servers_active"`
	ServersIdle    float64 `json:"servers_idle"`
	ServersUsed    float64 `json:"servers_used"`
	ServersLogin   float64 `json:"servers_login"`
	// QueueWaitSeconds is how long the oldest waiting client has waited
	// (maxwait + maxwait_us); 0 when nobody waits.
	QueueWaitSeconds float64 `json:"queue_wait_seconds"`
	// AvgWaitSeconds is SHOW STATS' avg_wait_time: the average time clients
	// waited for a server over PgBouncer's last stats period.
	AvgWaitSeconds         float64 `json:"avg_wait_seconds"`
	TransactionsPerSecond  float64 `json:"transactions_per_second"`
	QueriesPerSecond       float64 `json:"queries_per_second"`
	totalXacts, totalQuery float64
}

// PgBouncerSummary is the PgBouncer monitor's part of /admin/status.
type PgBouncerSummary struct {
	health
	Up        bool                   `json:"up"`
	Databases []PgBouncerPoolSummary `json:"databases,omitempty"`
}

// PgBouncerPoolSummary is one database in PgBouncerSummary.
type PgBouncerPoolSummary struct {
	Database         string   `json:"database"`
	PoolSize         int      `json:"pool_size"`
	Saturation       *float64 `json:"saturation,omitempty"` // absent when the pool size is unknown
	ClientsActive    float64  `json:"clients_active"`
	ClientsWaiting   float64  `json:"clients_waiting"`
	QueueWaitSeconds float64  `json:"queue_wait_seconds"`
	TPS              float64  `json:"transactions_per_second"`
}

// PgBouncer polls PgBouncer's admin console (SHOW POOLS, SHOW STATS, SHOW
// DATABASES) over one connection in the simple query protocol, reconnecting
// after any failure, and exports parley_pgbouncer_* per database (the
// "pgbouncer" admin pseudo-database excluded). Columns are read by name, so
// versions that add columns work; one it needs that is missing or not a
// number fails the poll like an unreachable PgBouncer. When PgBouncer cannot
// be reached,
// parley_pgbouncer_up is 0 and the per-database series disappear; the
// monitor keeps trying every Interval and never fails the process.
type PgBouncer struct {
	opts    PgBouncerOptions
	connCfg *pgx.ConnConfig
	log     *slog.Logger
	loop    *loop

	pollMu sync.Mutex // one poll at a time owns conn and prev
	conn   *pgx.Conn
	prev   map[string]PgBouncerDatabase
	prevAt time.Time

	mu  sync.RWMutex
	up  bool
	dbs []PgBouncerDatabase
}

var (
	descPBUp = prometheus.NewDesc("parley_pgbouncer_up",
		"1 when the PgBouncer admin console answered the latest poll, else 0.", nil, nil)
	descPBSaturation = prometheus.NewDesc("parley_pgbouncer_pool_saturation_ratio",
		"Server connections in use (sv_active) over the pool size, per database (its fullest user pool).", []string{"database"}, nil)
	descPBQueueWait = prometheus.NewDesc("parley_pgbouncer_queue_wait_seconds",
		"How long the oldest client waiting for a server connection has waited (maxwait + maxwait_us).", []string{"database"}, nil)
	descPBAvgWait = prometheus.NewDesc("parley_pgbouncer_avg_wait_seconds",
		"Average time clients waited for a server over PgBouncer's last stats period (SHOW STATS avg_wait_time).", []string{"database"}, nil)
	descPBClients = prometheus.NewDesc("parley_pgbouncer_clients",
		"Client connections by state: active (linked to a server or idle) and waiting (queued for a server).", []string{"database", "state"}, nil)
	descPBServers = prometheus.NewDesc("parley_pgbouncer_servers",
		"Server connections by state (active, idle, used, login).", []string{"database", "state"}, nil)
	descPBTPS = prometheus.NewDesc("parley_pgbouncer_transactions_per_second",
		"Transactions per second through PgBouncer between the last two polls.", []string{"database"}, nil)
	descPBQPS = prometheus.NewDesc("parley_pgbouncer_queries_per_second",
		"Queries per second through PgBouncer between the last two polls.", []string{"database"}, nil)
)

// NewPgBouncer parses the admin URL and registers the metrics. It does not
// connect; Poll and Run do.
func NewPgBouncer(opts PgBouncerOptions) (*PgBouncer, error) {
	if opts.AdminURL == "" {
		return nil, errors.New("pgbouncer monitor: no admin URL")
	}
	cc, err := pgx.ParseConfig(opts.AdminURL)
	if err != nil {
		return nil, fmt.Errorf("pgbouncer monitor: admin URL: %w", err)
	}
	// The admin console speaks only the simple query protocol.
	cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	cc.StatementCacheCapacity = 0
	cc.DescriptionCacheCapacity = 0
	if opts.Interval <= 0 {
		opts.Interval = 15 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.MaxDatabases <= 0 {
		opts.MaxDatabases = 50
	}
	if cc.ConnectTimeout == 0 || cc.ConnectTimeout > opts.Timeout {
		cc.ConnectTimeout = opts.Timeout
	}
	ls, err := newLastSuccess(opts.Registerer)
	if err != nil {
		return nil, err
	}
	log := orDiscard(opts.Logger)
	p := &PgBouncer{opts: opts, connCfg: cc, log: log, loop: newLoop("pgbouncer", opts.Interval, log, ls)}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register((*pgbouncerCollector)(p)); err != nil {
			return nil, fmt.Errorf("pgbouncer monitor: register metrics: %w", err)
		}
	}
	return p, nil
}

// Run polls every Interval until ctx ends, then closes the connection.
func (p *PgBouncer) Run(ctx context.Context) error {
	defer p.Close()
	return p.loop.run(ctx, func(ctx context.Context) error {
		_, err := p.poll(ctx)
		return err
	})
}

// Close closes the admin connection (a later Poll reconnects).
func (p *PgBouncer) Close() {
	p.pollMu.Lock()
	defer p.pollMu.Unlock()
	p.closeConn()
}

func (p *PgBouncer) closeConn() {
	if p.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = p.conn.Close(ctx)
		p.conn = nil
	}
}

// Poll reads PgBouncer once and updates the metrics. An error means
// PgBouncer was unreachable or answered unexpectedly; the metrics then say
// parley_pgbouncer_up 0.
func (p *PgBouncer) Poll(ctx context.Context) ([]PgBouncerDatabase, error) {
	dbs, err := p.poll(ctx)
	if ctx.Err() == nil {
		p.loop.record(err)
	}
	return dbs, err
}

func (p *PgBouncer) poll(ctx context.Context) ([]PgBouncerDatabase, error) {
	p.pollMu.Lock()
	defer p.pollMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	dbs, err := p.read(ctx)
	if err != nil {
		p.closeConn()
		p.prev = nil
		p.mu.Lock()
		p.up, p.dbs = false, nil
		p.mu.Unlock()
		return nil, fmt.Errorf("pgbouncer: %w", err)
	}
	p.mu.Lock()
	p.up, p.dbs = true, dbs
	p.mu.Unlock()
	return slices.Clone(dbs), nil
}

func (p *PgBouncer) read(ctx context.Context) ([]PgBouncerDatabase, error) {
	if p.conn == nil {
		conn, err := pgx.ConnectConfig(ctx, p.connCfg)
		if err != nil {
			return nil, fmt.Errorf("connect to admin console: %w", err)
		}
		p.conn = conn
	}
	var sh pgbouncerShow
	for _, q := range []struct {
		cmd  string
		rows *[]showRow
	}{{"SHOW POOLS", &sh.pools}, {"SHOW STATS", &sh.stats}, {"SHOW DATABASES", &sh.databases}} {
		rows, err := showRows(ctx, p.conn, q.cmd)
		if err != nil {
			return nil, err
		}
		*q.rows = rows
	}
	sh.config = func() ([]showRow, error) { return showRows(ctx, p.conn, "SHOW CONFIG") }
	now := time.Now()
	dbs, all, err := aggregatePgBouncer(sh, p.prev, p.prevAt, now, p.opts.MaxDatabases)
	if err != nil {
		return nil, err
	}
	p.prev, p.prevAt = all, now
	return dbs, nil
}

// pgbouncerShow is what one poll read from the admin console.
type pgbouncerShow struct {
	pools, stats, databases []showRow
	// config reads SHOW CONFIG, only when a pool's database is missing from
	// SHOW DATABASES (its pool size is then default_pool_size).
	config func() ([]showRow, error)
}

// aggregatePgBouncer sums one poll's SHOW rows per database (the "pgbouncer"
// admin pseudo-database excluded). prev and prevAt are the previous poll's
// databases, for rates from the counters; all is this poll's, for the next.
// dbs is capped at maxDBs, the busiest first, and sorted by name. A column
// it needs that is missing or not a number is an error (a PgBouncer version
// that renamed it must not read as 0); columns it does not know are ignored.
func aggregatePgBouncer(sh pgbouncerShow, prev map[string]PgBouncerDatabase, prevAt, now time.Time, maxDBs int) (dbs []PgBouncerDatabase, all map[string]PgBouncerDatabase, err error) {
	byName := map[string]*PgBouncerDatabase{}
	get := func(name string) *PgBouncerDatabase {
		d := byName[name]
		if d == nil {
			d = &PgBouncerDatabase{Database: name, Saturation: -1}
			byName[name] = d
		}
		return d
	}
	dbr, pr, sr := showReader{cmd: "SHOW DATABASES"}, showReader{cmd: "SHOW POOLS"}, showReader{cmd: "SHOW STATS"}
	poolSize := map[string]int{}
	for _, r := range sh.databases {
		name := dbr.str(r, "name")
		if name == "" || name == "pgbouncer" {
			continue
		}
		d := get(name)
		d.PoolSize = int(dbr.num(r, "pool_size"))
		poolSize[name] = d.PoolSize
		if d.PoolSize > 0 {
			d.Saturation = 0
		}
		d.PoolMode = dbr.str(r, "pool_mode")
	}
	if dbr.err != nil {
		return nil, nil, dbr.err
	}
	// An auto-created database ("*" entry) is sometimes missing from SHOW
	// DATABASES while its pool is in SHOW POOLS; its pool size is then
	// default_pool_size.
	for _, r := range sh.pools {
		if name := pr.str(r, "database"); name != "" && name != "pgbouncer" && poolSize[name] == 0 {
			size, err := defaultPoolSize(sh.config)
			if err != nil {
				return nil, nil, err
			}
			for _, r := range sh.pools {
				if name := pr.str(r, "database"); name != "" && name != "pgbouncer" && poolSize[name] == 0 && size > 0 {
					poolSize[name] = size
					d := get(name)
					d.PoolSize, d.Saturation = size, 0
				}
			}
			break
		}
	}
	for _, r := range sh.pools {
		name := pr.str(r, "database")
		if name == "" || name == "pgbouncer" {
			continue
		}
		d := get(name)
		d.ClientsActive += pr.num(r, "cl_active")
		d.ClientsWaiting += pr.num(r, "cl_waiting")
		active := pr.num(r, "sv_active")
		d.ServersActive += active
		d.ServersIdle += pr.num(r, "sv_idle")
		d.ServersUsed += pr.num(r, "sv_used")
		d.ServersLogin += pr.num(r, "sv_login")
		d.QueueWaitSeconds = max(d.QueueWaitSeconds, pr.num(r, "maxwait")+pr.num(r, "maxwait_us")/1e6)
		if m := pr.str(r, "pool_mode"); m != "" {
			d.PoolMode = m
		}
		if size := poolSize[name]; size > 0 {
			d.Saturation = max(d.Saturation, active/float64(size))
		}
	}
	if pr.err != nil {
		return nil, nil, pr.err
	}
	for _, r := range sh.stats {
		name := sr.str(r, "database")
		if name == "" || name == "pgbouncer" {
			continue
		}
		d := get(name)
		d.AvgWaitSeconds = sr.num(r, "avg_wait_time") / 1e6
		d.totalXacts, d.totalQuery = sr.num(r, "total_xact_count"), sr.num(r, "total_query_count")
		d.TransactionsPerSecond, d.QueriesPerSecond = sr.num(r, "avg_xact_count"), sr.num(r, "avg_query_count")
		// Between two polls, the counters give a fresher rate than
		// PgBouncer's averages over its stats_period (60 s).
		if prev, ok := prev[name]; ok && now.After(prevAt) {
			elapsed := now.Sub(prevAt).Seconds()
			if dx, dq := d.totalXacts-prev.totalXacts, d.totalQuery-prev.totalQuery; dx >= 0 && dq >= 0 {
				d.TransactionsPerSecond, d.QueriesPerSecond = dx/elapsed, dq/elapsed
			}
		}
	}
	if sr.err != nil {
		return nil, nil, sr.err
	}

	dbs = make([]PgBouncerDatabase, 0, len(byName))
	all = make(map[string]PgBouncerDatabase, len(byName))
	for name, d := range byName {
		dbs = append(dbs, *d)
		all[name] = *d
	}
	activity := func(d PgBouncerDatabase) float64 {
		return d.ClientsActive + d.ClientsWaiting + d.ServersActive + d.ServersIdle + d.ServersUsed
	}
	slices.SortFunc(dbs, func(a, b PgBouncerDatabase) int {
		if c := cmp.Compare(activity(b), activity(a)); c != 0 {
			return c
		}
		return cmp.Compare(a.Database, b.Database)
	})
	if len(dbs) > maxDBs {
		dbs = dbs[:maxDBs]
	}
	slices.SortFunc(dbs, func(a, b PgBouncerDatabase) int { return cmp.Compare(a.Database, b.Database) })
	return dbs, all, nil
}

// defaultPoolSize reads default_pool_size from SHOW CONFIG.
func defaultPoolSize(config func() ([]showRow, error)) (int, error) {
	rows, err := config()
	if err != nil {
		return 0, err
	}
	cr := showReader{cmd: "SHOW CONFIG"}
	for _, r := range rows {
		if cr.str(r, "key") == "default_pool_size" {
			n := int(cr.num(r, "value"))
			return n, cr.err
		}
	}
	if cr.err != nil {
		return 0, cr.err
	}
	return 0, errors.New("SHOW CONFIG: no default_pool_size")
}

// showRow is one row of a SHOW command, by column name (text format; a
// NULL is "").
type showRow map[string]string

// showReader reads the columns of one SHOW command's rows and keeps the
// first problem: a column that is missing, or not a number where one is
// needed.
type showReader struct {
	cmd string
	err error
}

func (r *showReader) str(row showRow, col string) string {
	v, ok := row[col]
	if !ok && r.err == nil {
		r.err = fmt.Errorf("%s: no column %q", r.cmd, col)
	}
	return v
}

func (r *showReader) num(row showRow, col string) float64 {
	v, ok := row[col]
	if !ok {
		if r.err == nil {
			r.err = fmt.Errorf("%s: no column %q", r.cmd, col)
		}
		return 0
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil && r.err == nil {
		r.err = fmt.Errorf("%s: column %q is %q, not a number", r.cmd, col, v)
	}
	return f
}

// showRows runs an admin console command and returns its rows keyed by
// column name, so that columns added or reordered by other PgBouncer
// versions do not matter.
func showRows(ctx context.Context, conn *pgx.Conn, cmd string) ([]showRow, error) {
	rows, err := conn.Query(ctx, cmd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	defer rows.Close()
	fds := rows.FieldDescriptions()
	var out []showRow
	for rows.Next() {
		raw := rows.RawValues()
		r := make(showRow, len(fds))
		for i, fd := range fds {
			r[fd.Name] = ""
			if i < len(raw) && raw[i] != nil {
				r[fd.Name] = string(raw[i])
			}
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return out, nil
}

// Up reports whether the latest poll reached PgBouncer.
func (p *PgBouncer) Up() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.up
}

// Databases returns the latest poll's databases (nil while PgBouncer is down).
func (p *PgBouncer) Databases() []PgBouncerDatabase {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return slices.Clone(p.dbs)
}

// Summary reports whether PgBouncer is up and its databases.
func (p *PgBouncer) Summary() PgBouncerSummary {
	p.mu.RLock()
	defer p.mu.RUnlock()
	s := PgBouncerSummary{health: p.loop.health(), Up: p.up}
	for _, d := range p.dbs {
		ps := PgBouncerPoolSummary{Database: d.Database, PoolSize: d.PoolSize, ClientsActive: d.ClientsActive,
			ClientsWaiting: d.ClientsWaiting, QueueWaitSeconds: d.QueueWaitSeconds, TPS: d.TransactionsPerSecond}
		if d.Saturation >= 0 {
			sat := d.Saturation
			ps.Saturation = &sat
		}
		s.Databases = append(s.Databases, ps)
	}
	return s
}

type pgbouncerCollector PgBouncer

func (c *pgbouncerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPBUp, descPBSaturation, descPBQueueWait, descPBAvgWait,
		descPBClients, descPBServers, descPBTPS, descPBQPS} {
		ch <- d
	}
}

func (c *pgbouncerCollector) Collect(ch chan<- prometheus.Metric) {
	p := (*PgBouncer)(c)
	p.mu.RLock()
	up, dbs := p.up, p.dbs
	p.mu.RUnlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	upV := 0.0
	if up {
		upV = 1
	}
	gauge(descPBUp, upV)
	for _, d := range dbs {
		if d.Saturation >= 0 {
			gauge(descPBSaturation, d.Saturation, d.Database)
		}
		gauge(descPBQueueWait, d.QueueWaitSeconds, d.Database)
		gauge(descPBAvgWait, d.AvgWaitSeconds, d.Database)
		gauge(descPBClients, d.ClientsActive, d.Database, "active")
		gauge(descPBClients, d.ClientsWaiting, d.Database, "waiting")
		gauge(descPBServers, d.ServersActive, d.Database, "active")
		gauge(descPBServers, d.ServersIdle, d.Database, "idle")
		gauge(descPBServers, d.ServersUsed, d.Database, "used")
		gauge(descPBServers, d.ServersLogin, d.Database, "login")
		gauge(descPBTPS, d.TransactionsPerSecond, d.Database)
		gauge(descPBQPS, d.QueriesPerSecond, d.Database)
	}
}
