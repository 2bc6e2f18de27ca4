package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parley-chat/parley/internal/stack"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

func TestSQLQueryName(t *testing.T) {
	for _, tt := range []struct{ sql, want string }{
		{"-- name: history_page\nSELECT 1", "history_page"},
		{"  \n-- name: GetUser :one\nSELECT 1", "GetUser"},
		{"-- name:unread_count\r\nSELECT 1", "unread_count"},
		{"SELECT 1 -- name: late", ""},
		{"-- a comment\nSELECT 1", ""},
		{"-- name: ", ""},
		{"", ""},
	} {
		if got := sqlQueryName(tt.sql); got != tt.want {
			t.Errorf("sqlQueryName(%q) = %q, want %q", tt.sql, got, tt.want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

var _ net.Error = timeoutErr{}

func TestErrorClass(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&pgconn.PgError{Code: "23505"}, "23"},
		{fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: "40P01"}), "40"},
		{&pgconn.PgError{Code: "bad"}, "client"},
		{context.Canceled, "canceled"},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), "timeout"},
		{timeoutErr{}, "timeout"},
		{&net.OpError{Op: "read", Err: errors.New("connection reset by peer")}, "conn"},
		{io.ErrUnexpectedEOF, "conn"},
		{errors.New("conn closed"), "conn"},
		{errors.New("can't scan into dest[0]"), "client"},
	} {
		if got := errorClass(tt.err); got != tt.want {
			t.Errorf("errorClass(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestQueryPerformance(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	s := stacktest.ForTest(t)
	db := s.NewDatabase(t)
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	qp, err := NewQueryPerformance(QueryPerformanceOptions{Registerer: reg, Logger: logs.logger(),
		SlowThreshold: 150 * time.Millisecond, MaxQueryNames: 8})
	if err != nil {
		t.Fatal(err)
	}
	primary := newPool(t, db.PrimaryURL, false, qp.Tracer("primary"))
	bouncer := newPool(t, db.PgBouncerURL, true, qp.Tracer("primary"))
	replica := newPool(t, db.ReplicaURL, false, qp.Tracer("replica"))
	if qp.Tracer("primary") != qp.Tracer("primary") {
		t.Fatal("Tracer returns a new tracer per call")
	}
	count := func(query, target string) float64 {
		v, _ := stacktest.Metric(t, reg, "parley_db_query_duration_seconds", map[string]string{"query": query, "target": target})
		return v
	}
	errorsOf := func(query, target, class string) float64 {
		return testutil.ToFloat64(qp.errors.WithLabelValues(query, target, class))
	}

	// Names from the context, from a leading SQL comment, or "other".
	var n int
	for range 3 {
		if err := primary.QueryRow(WithQueryName(ctx, "history_page"), `SELECT $1::int`, 7).Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := replica.QueryRow(ctx, "-- name: unread_count\nSELECT 1").Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bouncer.Exec(WithQueryName(ctx, "history_page"), `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := primary.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		query, target string
		want          float64
	}{
		{"history_page", "primary", 4}, {"unread_count", "replica", 2}, {"unread_count", "primary", 0},
	} {
		if got := count(c.query, c.target); got != c.want {
			t.Errorf("%s/%s: %v queries, want %v", c.query, c.target, got, c.want)
		}
	}
	if count("other", "primary") < 1 {
		t.Error("unnamed query not counted as other")
	}

	// A query slower than the threshold: counted and logged, without its
	// parameter values.
	if _, err := primary.Exec(WithQueryName(ctx, "sleepy"), `SELECT pg_sleep($1::float8), $2::text`, 0.2, "secret-param-value"); err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(qp.slow.WithLabelValues("sleepy", "primary")); v != 1 {
		t.Errorf("slow queries = %v, want 1", v)
	}
	if v := testutil.ToFloat64(qp.slow.WithLabelValues("history_page", "primary")); v != 0 {
		t.Errorf("fast queries counted slow: %v", v)
	}
	out := logs.String()
	if !strings.Contains(out, "slow query") || !strings.Contains(out, "query=sleepy") || !strings.Contains(out, "target=primary") {
		t.Errorf("no slow-query line:\n%s", out)
	}
	if strings.Contains(out, "secret-param-value") {
		t.Errorf("slow-query log leaks a parameter value:\n%s", out)
	}

	// Errors by SQLSTATE class and by cause.
	errCtx := WithQueryName(ctx, "failing")
	if _, err := primary.Exec(errCtx, `SELECT 1/0`); err == nil {
		t.Fatal("division by zero succeeded")
	}
	if _, err := primary.Exec(errCtx, `SELECT * FROM no_such_table`); err == nil {
		t.Fatal("query on a missing table succeeded")
	}
	rows, _ := replica.Query(errCtx, `SELECT 1/0`)
	rows.Close()
	canceled, cancel := context.WithCancel(errCtx)
	cancel()
	_, _ = primary.Exec(canceled, `SELECT 1`)
	short, cancel2 := context.WithTimeout(errCtx, 100*time.Millisecond)
	defer cancel2()
	_, timeoutErr := primary.Exec(short, `SELECT pg_sleep(2)`)
	// Cancelled once the server runs it: a fixed delay could end it while
	// the pool still dials the connection the timeout above closed, and a
	// query that never started is not traced.
	midQuery, cancel3 := context.WithCancel(errCtx)
	go func() {
		defer cancel3()
		conn, err := pgx.Connect(ctx, db.PrimaryURL)
		if err != nil {
			t.Errorf("watch the query: %v", err)
			return
		}
		defer conn.Close(context.Background())
		for ctx.Err() == nil {
			var running bool
			if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
				WHERE query = 'SELECT pg_sleep(2.5)' AND state = 'active')`).Scan(&running); err != nil || running {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	_, _ = primary.Exec(midQuery, `SELECT pg_sleep(2.5)`)
	for _, c := range []struct {
		target, class string
		want          float64
	}{
		{"primary", "22", 1}, {"primary", "42", 1}, {"replica", "22", 1}, {"primary", "canceled", 1},
	} {
		if got := errorsOf("failing", c.target, c.class); got != c.want {
			t.Errorf("errors{failing,%s,%s} = %v, want %v", c.target, c.class, got, c.want)
		}
	}
	// A context canceled before the query fails in the pool, untraced; one
	// canceled mid-query is "canceled", a deadline hit mid-query "timeout".
	if got := errorsOf("failing", "primary", "timeout"); got != 1 {
		t.Errorf("timeout errors = %v, want 1 (query error: %v)", got, timeoutErr)
	}

	// Batches: each query named by its SQL comment or the batch's context.
	b := &pgx.Batch{}
	b.Queue("-- name: batch_a\nSELECT 1")
	b.Queue("SELECT 2")
	if err := primary.SendBatch(WithQueryName(ctx, "batch_ctx"), b).Close(); err != nil {
		t.Fatal(err)
	}
	if count("batch_a", "primary") != 1 || count("batch_ctx", "primary") != 1 {
		t.Errorf("batch: batch_a %v, batch_ctx %v", count("batch_a", "primary"), count("batch_ctx", "primary"))
	}

	// CopyFrom.
	if _, err := primary.Exec(ctx, `CREATE TABLE copy_target (id int)`); err != nil {
		t.Fatal(err)
	}
	if _, err := primary.CopyFrom(ctx, pgx.Identifier{"copy_target"}, []string{"id"}, pgx.CopyFromRows([][]any{{1}, {2}})); err != nil {
		t.Fatal(err)
	}
	if count("copy_from", "primary") != 1 {
		t.Errorf("copy_from = %v", count("copy_from", "primary"))
	}

	// The label set stays bounded: bad names and names past the limit are "other".
	before := count("other", "primary")
	for _, name := range []string{"has space", strings.Repeat("x", 65), "n1", "n2", "n3", "n4", "n5"} {
		if _, err := primary.Exec(WithQueryName(ctx, name), `SELECT 1`); err != nil {
			t.Fatal(err)
		}
	}
	// Accepted so far: history_page, unread_count, sleepy, failing, batch_a,
	// batch_ctx, copy_from (7 of 8), then n1; n2…n5 are over the limit.
	if got := count("other", "primary") - before; got != 6 {
		t.Errorf("%v queries went to other, want 6", got)
	}
	if count("n1", "primary") != 1 || count("n2", "primary") != 0 {
		t.Errorf("name limit: n1 %v, n2 %v", count("n1", "primary"), count("n2", "primary"))
	}

	// The summary agrees with the metrics. (Slow queries: sleepy, and any
	// other that a busy machine took past 150 ms; errors: exactly the four
	// failing ones above on the primary, one on the replica.)
	sum := qp.Summary()
	slow := stacktest.MustMetric(t, reg, "parley_db_slow_queries_total", map[string]string{"target": "primary"})
	if got := float64(sum.Targets["primary"].SlowQueries); got != slow || got < 1 || sum.Targets["primary"].Errors != 4 || sum.Targets["replica"].Errors != 1 {
		t.Errorf("summary: %+v (parley_db_slow_queries_total{target=primary} %v)", sum, slow)
	}
}

// Two QueryPerformance instances on one registry share the metrics instead
// of failing (several components may build their own).
func TestQueryPerformanceSharesRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := NewQueryPerformance(QueryPerformanceOptions{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewQueryPerformance(QueryPerformanceOptions{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if a.duration != b.duration {
		t.Error("second instance did not reuse the registered histogram")
	}
}

// benchTrace runs one traced query's worth of tracer work.
func benchTrace(b *testing.B, ctx context.Context, sql string) {
	reg := prometheus.NewRegistry()
	qp, err := NewQueryPerformance(QueryPerformanceOptions{Registerer: reg})
	if err != nil {
		b.Fatal(err)
	}
	tr := qp.Tracer("primary")
	start := pgx.TraceQueryStartData{SQL: sql, Args: []any{int64(1), "x"}}
	end := pgx.TraceQueryEndData{CommandTag: pgconn.NewCommandTag("SELECT 1")}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		qctx := tr.TraceQueryStart(ctx, nil, start)
		tr.TraceQueryEnd(qctx, nil, end)
	}
}

// BenchmarkQueryTracer measures the tracer's cost per query (start + end),
// with the name in the context as the application sets it.
func BenchmarkQueryTracer(b *testing.B) {
	ctx := context.Background()
	// A realistic context chain: a few values set by HTTP middleware.
	for i := range 4 {
		ctx = context.WithValue(ctx, benchKey(i), i)
	}
	b.Run("ctx_name", func(b *testing.B) {
		benchTrace(b, WithQueryName(ctx, "history_page"), `SELECT id FROM messages WHERE conversation_id = $1`)
	})
	b.Run("sql_comment", func(b *testing.B) {
		benchTrace(b, ctx, "-- name: history_page\nSELECT id FROM messages WHERE conversation_id = $1")
	})
	b.Run("unnamed", func(b *testing.B) {
		benchTrace(b, ctx, `SELECT 1`)
	})
}

type benchKey int

// BenchmarkQueryTracerRoundTrip runs SELECT 1 on the primary over two
// warmed pools, without and with the tracer, alternating query by query
// (and which pool goes first): run one after the other, their order alone
// moves them by more than the tracer costs. It reports each pool's time per
// query (untraced-ns/query, traced-ns/query); ns/op is one query on each.
// scripts/perf-tracer.sh writes its figures into docs/monitoring.md.
func BenchmarkQueryTracerRoundTrip(b *testing.B) {
	untraced, traced := roundTripPools(b)
	pools := [2]*pgxpool.Pool{untraced, traced}
	var took [2]time.Duration
	var n, i int
	for b.Loop() {
		for k := range 2 {
			j := (i + k) % 2
			start := time.Now()
			if err := pools[j].QueryRow(benchCtx, `SELECT 1`).Scan(&n); err != nil {
				b.Fatal(err)
			}
			took[j] += time.Since(start)
		}
		i++
	}
	b.ReportMetric(float64(took[0].Nanoseconds())/float64(i), "untraced-ns/query")
	b.ReportMetric(float64(took[1].Nanoseconds())/float64(i), "traced-ns/query")
}

// roundTripPools opens two warmed pools on the primary's app database, the
// second with the tracer.
func roundTripPools(tb testing.TB) (untraced, traced *pgxpool.Pool) {
	s := stacktest.ForTest(tb)
	url := s.PrimaryURLFor(stack.AppDB)
	qp, err := NewQueryPerformance(QueryPerformanceOptions{Registerer: prometheus.NewRegistry()})
	if err != nil {
		tb.Fatal(err)
	}
	untraced, traced = newPool(tb, url, false, nil), newPool(tb, url, false, qp.Tracer("primary"))
	for _, pool := range []*pgxpool.Pool{untraced, traced} {
		var n int
		for range 1000 {
			if err := pool.QueryRow(benchCtx, `SELECT 1`).Scan(&n); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return untraced, traced
}

var benchCtx = WithQueryName(context.Background(), "bench")
