package dbrouter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestMain runs the package against a real primary, replica and PgBouncer.
// With PARLEY_UPDATE_DOCS=1 it also writes the figures the tests measured
// (and the routing benchmark) into docs/routing.md.
func TestMain(m *testing.M) {
	code := stacktest.Main(m)
	if code == 0 && os.Getenv("PARLEY_UPDATE_DOCS") != "" {
		if err := updateDocs("../../docs/routing.md"); err != nil {
			fmt.Fprintf(os.Stderr, "update docs: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// measured holds figures the tests measured, for docs/routing.md.
var measured = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

func record(t *testing.T, key, format string, args ...any) {
	t.Helper()
	v := fmt.Sprintf(format, args...)
	t.Logf("measured: %s = %s", key, v)
	measured.Lock()
	measured.m[key] = v
	measured.Unlock()
}

const (
	docsBegin = "<!-- measured:begin (written by PARLEY_UPDATE_DOCS=1 go test ./internal/dbrouter/) -->"
	docsEnd   = "<!-- measured:end -->"
)

func updateDocs(path string) error {
	if raceEnabled {
		return fmt.Errorf("run without -race: the benchmarks would measure the race detector")
	}
	res := testing.Benchmark(BenchmarkRouteDecision)
	par := testing.Benchmark(BenchmarkRouteDecisionParallel)
	acq := testing.Benchmark(BenchmarkAcquireTracer)
	measured.Lock()
	measured.m["routing decision + reads_total increment, 2 replicas, 1 goroutine"] = fmt.Sprintf("%d ns/op, %d allocs/op", res.NsPerOp(), res.AllocsPerOp())
	measured.m["routing decision + reads_total increment, 2 replicas, parallel"] = fmt.Sprintf("%d ns/op", par.NsPerOp())
	measured.m["acquire tracer (wait bound + histogram), per pool Acquire"] = fmt.Sprintf("%d ns/op, %d allocs/op", acq.NsPerOp(), acq.AllocsPerOp())
	keys := make([]string, 0, len(measured.m))
	for k := range measured.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s\nMeasured on %s by the last PARLEY_UPDATE_DOCS run (%d cores):\n\n| what | measured |\n|---|---|\n", docsBegin, time.Now().UTC().Format("2006-01-02"), runtime.NumCPU())
	for _, k := range keys {
		fmt.Fprintf(&b, "| %s | %s |\n", k, measured.m[k])
	}
	b.WriteString(docsEnd)
	measured.Unlock()
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	i, j := bytes.Index(doc, []byte(docsBegin)), bytes.Index(doc, []byte(docsEnd))
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %q … %q block", path, docsBegin, docsEnd)
	}
	out := append(append(append([]byte{}, doc[:i]...), b.String()...), doc[j+len(docsEnd):]...)
	return os.WriteFile(path, out, 0o644)
}

// ---- helpers for the integration tests ----

// newRouter starts a Router for the test with its own registry.
func newRouter(t *testing.T, cfg Config) (*Router, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(r.Close)
	return r, reg
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

var _ io.Writer = testLogWriter{}

func breakerOf(r *Router, i int) string { return r.Status()[i].Breaker }

// isReplica reads pg_is_in_recovery() through q: which node really served.
func isReplica(ctx context.Context, q postgres.Querier) (bool, error) {
	var rec bool
	err := q.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&rec)
	return rec, err
}
