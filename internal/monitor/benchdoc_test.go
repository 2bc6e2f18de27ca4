package monitor

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// TestWriteTracerBenchmarks times traced and untraced round trips
// interleaved (a short run in the ordinary suite, which checks that both
// paths work). With PARLEY_UPDATE_DOCS=1 it runs the full measurement and the
// tracer benchmarks and writes their results into docs/monitoring.md between
// the bench:querytracer markers, so the figures there come from the tool that
// measured them:
//
//	PARLEY_UPDATE_DOCS=1 go test -run TestWriteTracerBenchmarks ./internal/monitor/
func TestWriteTracerBenchmarks(t *testing.T) {
	update := os.Getenv("PARLEY_UPDATE_DOCS") == "1"
	ctx := context.Background()
	for i := range 4 {
		ctx = context.WithValue(ctx, benchKey(i), i)
	}
	type result struct {
		name string
		r    testing.BenchmarkResult
	}
	var results []result
	run := func(name string, f func(*testing.B)) {
		r := testing.Benchmark(f)
		if r.N == 0 {
			t.Fatalf("benchmark %s did not run", name)
		}
		results = append(results, result{name, r})
	}
	if update {
		run("tracer, name in context", func(b *testing.B) {
			benchTrace(b, WithQueryName(ctx, "history_page"), `SELECT id FROM messages WHERE conversation_id = $1`)
		})
		run("tracer, name in SQL comment", func(b *testing.B) {
			benchTrace(b, ctx, "-- name: history_page\nSELECT id FROM messages WHERE conversation_id = $1")
		})
		run("tracer, unnamed (other)", func(b *testing.B) { benchTrace(b, ctx, `SELECT 1`) })
	}
	// The round trips are interleaved (rounds of 2000 queries on each pool in
	// turn): run one after the other, the order alone moves them by more
	// than the tracer costs.
	untracedPool, tracedPool := roundTripPools(t)
	rounds, perRound := 2, 200
	if update {
		rounds, perRound = 20, 2000
	}
	var untraced, traced time.Duration
	var n int
	for range rounds {
		for _, p := range []struct {
			pool *pgxpool.Pool
			sum  *time.Duration
		}{{untracedPool, &untraced}, {tracedPool, &traced}} {
			start := time.Now()
			for range perRound {
				if err := p.pool.QueryRow(benchCtx, `SELECT 1`).Scan(&n); err != nil {
					t.Fatal(err)
				}
			}
			*p.sum += time.Since(start)
		}
	}
	untracedNs, tracedNs := untraced.Nanoseconds()/int64(rounds*perRound), traced.Nanoseconds()/int64(rounds*perRound)
	if untracedNs <= 0 || tracedNs <= 0 {
		t.Fatalf("round trips not timed: untraced %d ns, traced %d ns", untracedNs, tracedNs)
	}
	t.Logf("SELECT 1 round trip: untraced %d ns, traced %d ns", untracedNs, tracedNs)
	if !update {
		return
	}

	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %s/%s, %d CPUs, %s:\n\n", time.Now().UTC().Format("2006-01-02"),
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	b.WriteString("| benchmark | ns/op | allocs/op | B/op |\n|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %d | %d | %d |\n", r.name, r.r.NsPerOp(), r.r.AllocsPerOp(), r.r.AllocedBytesPerOp())
	}
	fmt.Fprintf(&b, "| `SELECT 1` on the primary, untraced (interleaved, %d×%d) | %d | | |\n", rounds, perRound, untracedNs)
	fmt.Fprintf(&b, "| `SELECT 1` on the primary, traced (interleaved, %d×%d) | %d | | |\n", rounds, perRound, tracedNs)
	fmt.Fprintf(&b, "\nThe tracer's own cost (first row) is %.2f %% of an untraced `SELECT 1` round trip; "+
		"the two round-trip rows differ by %+d ns in this run (machine noise included).\n",
		100*float64(results[0].r.NsPerOp())/float64(untracedNs), tracedNs-untracedNs)

	path := filepath.Join(repoRoot(t), "docs", "monitoring.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- bench:querytracer:begin -->\n", "<!-- bench:querytracer:end -->"
	i, j := bytes.Index(doc, []byte(begin)), bytes.Index(doc, []byte(end))
	if i < 0 || j < i {
		t.Fatalf("%s lacks the bench:querytracer markers", path)
	}
	out := append(append(append([]byte{}, doc[:i+len(begin)]...), b.String()...), doc[j:]...)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s:\n%s", path, b.String())
}
