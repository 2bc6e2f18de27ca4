package stacktest

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// WaitFor polls cond every 10 ms until it holds, and returns how long that
// took; it fails the test after timeout.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// Exec runs sql on url with a fresh connection; a failure fails the test
// (Error, not Fatal: safe on any goroutine).
func Exec(tb testing.TB, url, sql string, args ...any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Errorf("connect: %v", err)
		return
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		tb.Errorf("%s: %v", sql, err)
	}
}

// PauseReplay pauses WAL replay on the replica at replicaURL and resumes it
// in Cleanup, whatever happens (the package's tests share the replica).
func PauseReplay(tb testing.TB, replicaURL string) {
	tb.Helper()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, replicaURL); err == nil {
			_, _ = conn.Exec(ctx, `SELECT pg_wal_replay_resume()`)
			conn.Close(ctx)
		}
	})
	Exec(tb, replicaURL, `SELECT pg_wal_replay_pause()`)
}

// ResumeReplay resumes WAL replay on the replica at replicaURL.
func ResumeReplay(tb testing.TB, replicaURL string) {
	tb.Helper()
	Exec(tb, replicaURL, `SELECT pg_wal_replay_resume()`)
}

// Metric sums the samples of the metric family name in g whose labels
// include labels (all of them; nil matches every sample): a counter's or a
// gauge's value, a histogram's sample count. ok is false when no sample
// matches.
func Metric(tb testing.TB, g prometheus.Gatherer, name string, labels map[string]string) (v float64, ok bool) {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, want := range labels {
				if have[k] != want {
					continue next
				}
			}
			ok = true
			switch {
			case m.Counter != nil:
				v += m.GetCounter().GetValue()
			case m.Gauge != nil:
				v += m.GetGauge().GetValue()
			case m.Histogram != nil:
				v += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return v, ok
}

// MustMetric is Metric that fails the test when no sample matches.
func MustMetric(tb testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	tb.Helper()
	v, ok := Metric(tb, g, name, labels)
	if !ok {
		tb.Fatalf("no series %s%v", name, labels)
	}
	return v
}

// LogBuffer is a log sink safe for concurrent writers, for assertions on
// log lines.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
