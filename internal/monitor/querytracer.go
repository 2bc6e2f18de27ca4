package monitor

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/promreg"
)

// OtherQuery is the name of queries that carry no (acceptable) name.
const OtherQuery = "other"

type queryNameKey struct{}

// WithQueryName names the queries run with ctx for QueryPerformance's
// metrics (the "query" label). Names are code constants such as
// "history_page": letters, digits, '_', '.', '-', at most 64 bytes; the first
// MaxQueryNames distinct names are accepted, anything else counts as
// "other". A name in the context wins over one in the SQL.
func WithQueryName(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, queryNameKey{}, name)
}

// QueryName returns the name WithQueryName put in ctx, or "".
func QueryName(ctx context.Context) string {
	name, _ := ctx.Value(queryNameKey{}).(string)
	return name
}

// sqlQueryName returns the name of a query whose SQL starts with a
// "-- name: history_page" line (sqlc's convention; text after the name,
// such as sqlc's ":many", is ignored), or "".
func sqlQueryName(sql string) string {
	i := 0
	for i < len(sql) && (sql[i] == ' ' || sql[i] == '\n' || sql[i] == '\t' || sql[i] == '\r') {
		i++
	}
	const prefix = "-- name:"
	if len(sql)-i < len(prefix) || sql[i:i+len(prefix)] != prefix {
		return ""
	}
	s := sql[i+len(prefix):]
	for len(s) > 0 && s[0] == ' ' {
		s = s[1:]
	}
	end := 0
	for end < len(s) && s[end] != ' ' && s[end] != '\n' && s[end] != '\r' && s[end] != '\t' {
		end++
	}
	return s[:end]
}

func validQueryName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// QueryPerformanceOptions configures QueryPerformance.
type QueryPerformanceOptions struct {
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// SlowThreshold: queries taking at least this long count in
	// parley_db_slow_queries_total and are logged (default 200 ms).
	SlowThreshold time.Duration
	// Buckets of parley_db_query_duration_seconds (seconds).
	Buckets []float64
	// MaxQueryNames bounds the query label (default 100 distinct names).
	MaxQueryNames int
	// SlowLogPerSecond caps slow-query log lines; the excess is counted and
	// reported in the next line (default 10).
	SlowLogPerSecond int
}

// DefaultQueryBuckets suit queries measured against a 200 ms slow threshold
// and the 250–350 ms endpoint SLOs.
var DefaultQueryBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .2, .35, .5, 1, 2.5, 5, 10}

// QueryPerformance owns the query metrics
// (parley_db_query_duration_seconds, parley_db_query_errors_total,
// parley_db_slow_queries_total) and hands out one tracer per target.
type QueryPerformance struct {
	opts     QueryPerformanceOptions
	log      *slog.Logger
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	slow     *prometheus.CounterVec

	mu      sync.Mutex
	tracers map[string]*QueryTracer

	names     sync.Map // accepted query names → struct{}
	nameCount atomic.Int64
	nameWarn  sync.Once

	logMu         sync.Mutex
	logWindow     time.Time
	logN          int
	logSuppressed int
}

// NewQueryPerformance registers the query metrics.
func NewQueryPerformance(opts QueryPerformanceOptions) (*QueryPerformance, error) {
	if opts.SlowThreshold <= 0 {
		opts.SlowThreshold = 200 * time.Millisecond
	}
	if len(opts.Buckets) == 0 {
		opts.Buckets = DefaultQueryBuckets
	}
	if opts.MaxQueryNames <= 0 {
		opts.MaxQueryNames = 100
	}
	if opts.SlowLogPerSecond <= 0 {
		opts.SlowLogPerSecond = 10
	}
	q := &QueryPerformance{opts: opts, log: orDiscard(opts.Logger), tracers: map[string]*QueryTracer{}}
	var err error
	if q.duration, err = promreg.Register(opts.Registerer, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "parley_db_query_duration_seconds",
		Help:    "Database query latency by query name and target, measured by the pgx tracer.",
		Buckets: opts.Buckets,
	}, []string{"query", "target"})); err != nil {
		return nil, err
	}
	if q.errors, err = promreg.Register(opts.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_db_query_errors_total",
		Help: "Failed database queries by query name, target and class (SQLSTATE class, or conn, timeout, canceled, client).",
	}, []string{"query", "target", "class"})); err != nil {
		return nil, err
	}
	if q.slow, err = promreg.Register(opts.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_db_slow_queries_total",
		Help: "Database queries that took at least the slow-query threshold.",
	}, []string{"query", "target"})); err != nil {
		return nil, err
	}
	return q, nil
}

// SlowThreshold is the configured slow-query threshold.
func (q *QueryPerformance) SlowThreshold() time.Duration { return q.opts.SlowThreshold }

// Tracer returns the tracer for target ("primary" or "replica"; any short
// constant works), the same one on every call. Attach it to every pool of
// that target before creating the pool:
//
//	cfg.ConnConfig.Tracer = qp.Tracer("primary")
//
// It implements pgx.QueryTracer, pgx.BatchTracer and pgx.CopyFromTracer; to
// combine it with another tracer use github.com/jackc/pgx/v5/multitracer.
func (q *QueryPerformance) Tracer(target string) *QueryTracer {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t, ok := q.tracers[target]; ok {
		return t
	}
	t := &QueryTracer{qp: q, target: target}
	t.other = t.newQueryMetrics(OtherQuery)
	// The error classes that are not SQLSTATEs, at zero: the family exists
	// before the first error.
	for _, class := range []string{"conn", "timeout", "canceled", "client"} {
		q.errors.WithLabelValues(OtherQuery, target, class)
	}
	q.tracers[target] = t
	return t
}

// acceptName reports whether name may become a label value.
func (q *QueryPerformance) acceptName(name string) bool {
	if _, ok := q.names.Load(name); ok {
		return true
	}
	if !validQueryName(name) {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.names.Load(name); ok {
		return true
	}
	if q.nameCount.Load() >= int64(q.opts.MaxQueryNames) {
		q.nameWarn.Do(func() {
			q.log.Warn("query name limit reached; further names count as \"other\"", "limit", q.opts.MaxQueryNames, "rejected", name)
		})
		return false
	}
	q.names.Store(name, struct{}{})
	q.nameCount.Add(1)
	return true
}

// logSlow writes one slow-query line unless this second's quota is used up.
func (q *QueryPerformance) logSlow(name, target string, d time.Duration, sql string, err error) {
	now := time.Now()
	q.logMu.Lock()
	if now.Sub(q.logWindow) >= time.Second {
		q.logWindow, q.logN = now, 0
	}
	if q.logN >= q.opts.SlowLogPerSecond {
		q.logSuppressed++
		q.logMu.Unlock()
		return
	}
	q.logN++
	suppressed := q.logSuppressed
	q.logSuppressed = 0
	q.logMu.Unlock()
	attrs := []any{"query", name, "target", target, "duration_ms", float64(d.Microseconds()) / 1000,
		"threshold_ms", q.opts.SlowThreshold.Milliseconds(), "sql", sqlForLog(sql)}
	if err != nil {
		attrs = append(attrs, "error_class", errorClass(err))
	}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed_before", suppressed)
	}
	q.log.Warn("slow query", attrs...)
}

// sqlForLog is the statement text with whitespace collapsed, cut at 200
// bytes. Parameter values are never logged: pgx sends them apart from the
// SQL text (which has only $n placeholders), and the tracer never looks at
// them.
func sqlForLog(sql string) string {
	s := strings.Join(strings.Fields(sql), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// QueriesSummary is QueryPerformance's part of /admin/status.
type QueriesSummary struct {
	SlowThresholdSeconds float64                  `json:"slow_threshold_seconds"`
	Targets              map[string]TargetQueries `json:"targets"`
}

// TargetQueries counts one target's slow and failed queries since start.
type TargetQueries struct {
	SlowQueries uint64 `json:"slow_queries"`
	Errors      uint64 `json:"errors"`
}

// Summary counts slow and failed queries per target since start.
func (q *QueryPerformance) Summary() QueriesSummary {
	s := QueriesSummary{SlowThresholdSeconds: q.opts.SlowThreshold.Seconds(), Targets: map[string]TargetQueries{}}
	q.mu.Lock()
	defer q.mu.Unlock()
	for target, t := range q.tracers {
		s.Targets[target] = TargetQueries{SlowQueries: t.slowN.Load(), Errors: t.errN.Load()}
	}
	return s
}

// QueryTracer times the queries of one target. Get it from
// QueryPerformance.Tracer.
type QueryTracer struct {
	qp     *QueryPerformance
	target string
	other  *queryMetrics
	byName sync.Map // query name → *queryMetrics
	slowN  atomic.Uint64
	errN   atomic.Uint64
}

var (
	_ pgx.QueryTracer    = (*QueryTracer)(nil)
	_ pgx.BatchTracer    = (*QueryTracer)(nil)
	_ pgx.CopyFromTracer = (*QueryTracer)(nil)
)

// Target is the tracer's target label.
func (t *QueryTracer) Target() string { return t.target }

// queryMetrics are one (query, target)'s metric children, resolved once.
type queryMetrics struct {
	name     string
	duration prometheus.Observer
	slow     prometheus.Counter
}

func (t *QueryTracer) newQueryMetrics(name string) *queryMetrics {
	return &queryMetrics{
		name:     name,
		duration: t.qp.duration.WithLabelValues(name, t.target),
		slow:     t.qp.slow.WithLabelValues(name, t.target),
	}
}

// metrics returns the metrics of the query named by ctx or, failing that,
// by its SQL.
func (t *QueryTracer) metrics(ctx context.Context, sql string) *queryMetrics {
	name := QueryName(ctx)
	if name == "" {
		name = sqlQueryName(sql)
	}
	return t.metricsFor(name)
}

func (t *QueryTracer) metricsFor(name string) *queryMetrics {
	if name == "" {
		return t.other
	}
	if m, ok := t.byName.Load(name); ok {
		return m.(*queryMetrics)
	}
	if !t.qp.acceptName(name) {
		return t.other
	}
	m, _ := t.byName.LoadOrStore(name, t.newQueryMetrics(name))
	return m.(*queryMetrics)
}

// finish records one query's outcome.
func (t *QueryTracer) finish(m *queryMetrics, d time.Duration, sql string, err error) {
	m.duration.Observe(d.Seconds())
	if err != nil {
		t.errN.Add(1)
		t.qp.errors.WithLabelValues(m.name, t.target, errorClass(err)).Inc()
	}
	if d >= t.qp.opts.SlowThreshold {
		t.slowN.Add(1)
		m.slow.Inc()
		t.qp.logSlow(m.name, t.target, d, sql, err)
	}
}

// traceCtx carries one query's start through pgx (one allocation per query).
type traceCtx struct {
	context.Context
	start time.Time
	m     *queryMetrics
	sql   string
}

type traceCtxKey struct{}

func (c *traceCtx) Value(key any) any {
	if key == (traceCtxKey{}) {
		return c
	}
	return c.Context.Value(key)
}

func traceFrom(ctx context.Context) *traceCtx {
	if tc, ok := ctx.(*traceCtx); ok {
		return tc
	}
	tc, _ := ctx.Value(traceCtxKey{}).(*traceCtx)
	return tc
}

// TraceQueryStart implements pgx.QueryTracer.
func (t *QueryTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return &traceCtx{Context: ctx, start: time.Now(), m: t.metrics(ctx, data.SQL), sql: data.SQL}
}

// TraceQueryEnd implements pgx.QueryTracer.
func (t *QueryTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	if tc := traceFrom(ctx); tc != nil {
		t.finish(tc.m, time.Since(tc.start), tc.sql, data.Err)
	}
}

// batchCtx carries a batch's start and name through pgx.
type batchCtx struct {
	context.Context
	start  time.Time
	name   string
	failed bool // a query of the batch has reported an error
}

type batchCtxKey struct{}

func (c *batchCtx) Value(key any) any {
	if key == (batchCtxKey{}) {
		return c
	}
	return c.Context.Value(key)
}

func batchFrom(ctx context.Context) *batchCtx {
	if bc, ok := ctx.(*batchCtx); ok {
		return bc
	}
	bc, _ := ctx.Value(batchCtxKey{}).(*batchCtx)
	return bc
}

// TraceBatchStart implements pgx.BatchTracer.
func (t *QueryTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return &batchCtx{Context: ctx, start: time.Now(), name: QueryName(ctx)}
}

// TraceBatchQuery implements pgx.BatchTracer: each query of a batch is timed
// from when pgx began reading its result, and named by its SQL comment,
// else by the batch's context.
func (t *QueryTracer) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	bc := batchFrom(ctx)
	if bc == nil {
		return
	}
	name := sqlQueryName(data.SQL)
	if name == "" {
		name = bc.name
	}
	start := data.ReadStartTime
	if start.IsZero() {
		start = bc.start
	}
	if data.Err != nil {
		bc.failed = true
	}
	t.finish(t.metricsFor(name), time.Since(start), data.SQL, data.Err)
}

// TraceBatchEnd implements pgx.BatchTracer: a batch that failed before any
// of its queries reported counts one error under the batch's name.
func (t *QueryTracer) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchEndData) {
	bc := batchFrom(ctx)
	if bc == nil || data.Err == nil || bc.failed {
		return
	}
	m := t.metricsFor(bc.name)
	t.errN.Add(1)
	t.qp.errors.WithLabelValues(m.name, t.target, errorClass(data.Err)).Inc()
}

// TraceCopyFromStart implements pgx.CopyFromTracer; COPY is named by the
// context, else "copy_from".
func (t *QueryTracer) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceCopyFromStartData) context.Context {
	name := QueryName(ctx)
	if name == "" {
		name = "copy_from"
	}
	return &traceCtx{Context: ctx, start: time.Now(), m: t.metricsFor(name), sql: "COPY"}
}

// TraceCopyFromEnd implements pgx.CopyFromTracer.
func (t *QueryTracer) TraceCopyFromEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceCopyFromEndData) {
	if tc := traceFrom(ctx); tc != nil {
		t.finish(tc.m, time.Since(tc.start), tc.sql, data.Err)
	}
}

// errorClass maps an error to a bounded label: the SQLSTATE class (the first
// two characters of the code, e.g. "23" integrity violation, "40"
// serialization/deadlock, "57" statement timeout or admin shutdown) for
// server errors; "canceled" and "timeout" for context ends and network
// timeouts; "conn" for network and connection failures; "client" for errors
// pgx raised itself (encoding, scanning, misuse).
func errorClass(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if c := pgErr.Code; len(c) == 5 && isAlnum(c[0]) && isAlnum(c[1]) {
			return c[:2]
		}
		return "client"
	}
	if errors.Is(err, context.Canceled) {
		return "canceled"
	}
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
		return "timeout"
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		if netErr.Timeout() {
			return "timeout"
		}
		return "conn"
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || pgconn.SafeToRetry(err) {
		return "conn"
	}
	if pgErrorConnClosed(err) {
		return "conn"
	}
	return "client"
}

// pgErrorConnClosed recognises pgx's "conn closed"/"conn busy" errors,
// which carry no type.
func pgErrorConnClosed(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "conn busy")
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}
