// Command testreport keeps the results of a test run and turns them into
// the tables of docs/testing.md and docs/test-results.md.
//
//	go test -json ./... | go run ./scripts/testreport tee .test-results
//	go run ./scripts/testreport table -dir .test-results -summary S.md -detail D.md
//
// tee writes the JSON events to DIR/go-test.json and DIR/run.json (when the
// run started and ended, the commit, Go, the cores) and prints what a plain
// `go test ./...` prints: a line per package, and the output of the failed
// tests. It exits 1 when a package failed or did not build. table reads
// them (and the load generator's JSON reports in DIR/load, written by
// test/load when PARLEY_TEST_RESULTS is set) and writes the summary section
// (by layer and package) and the per-test detail page. scripts/report.sh
// runs it; `make report` runs that.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/loadgen"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "tee":
		if len(os.Args) != 3 {
			usage()
		}
		var failed bool
		failed, err = tee(os.Stdin, os.Stdout, os.Args[2])
		if err == nil && failed {
			os.Exit(1)
		}
	case "table":
		fs := flag.NewFlagSet("table", flag.ExitOnError)
		dir := fs.String("dir", ".test-results", "the results directory (tee's)")
		summary := fs.String("summary", "", "write the summary section (markdown) here")
		detail := fs.String("detail", "", "write the per-test page (markdown) here")
		_ = fs.Parse(os.Args[2:])
		err = table(*dir, *summary, *detail)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: go test -json ./... | testreport tee DIR\n       testreport table [-dir DIR] [-summary FILE] [-detail FILE]")
	os.Exit(2)
}

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Time       time.Time `json:"Time"`
	Action     string    `json:"Action"`
	Package    string    `json:"Package"`
	ImportPath string    `json:"ImportPath"` // build-output, build-fail
	Test       string    `json:"Test"`
	Elapsed    float64   `json:"Elapsed"`
	Output     string    `json:"Output"`
}

// run is DIR/run.json: the run the results come from.
type run struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Commit   string    `json:"commit"`
	Dirty    bool      `json:"dirty"`
	Go       string    `json:"go"`
	Cores    int       `json:"cores"`
	Failed   bool      `json:"failed"`
	// LoadStart and LoadEnd are /proc/loadavg's 1-minute load at the start
	// and the end: other work on a shared machine shows there.
	LoadStart string `json:"load_start,omitempty"`
	LoadEnd   string `json:"load_end,omitempty"`
}

// loadavg is the 1-minute load average ("" where /proc has none).
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// pkgOutput is what tee holds of a package until it ends.
type pkgOutput struct {
	lines  []string            // the package's own output
	tests  map[string][]string // each test's output
	failed []string            // the failed tests, in order
}

// quiet drops the lines of a verbose run that a plain `go test` does not print.
func quiet(line string) bool {
	for _, p := range []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME"} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

func tee(in io.Reader, out io.Writer, dir string) (failed bool, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	f, err := os.Create(filepath.Join(dir, "go-test.json"))
	if err != nil {
		return false, err
	}
	defer f.Close()
	meta := run{Started: time.Now().UTC(), Go: runtime.Version(), Cores: runtime.NumCPU(), LoadStart: loadavg()}
	meta.Commit, meta.Dirty = gitCommit()

	pkgs := map[string]*pkgOutput{}
	get := func(p string) *pkgOutput {
		if pkgs[p] == nil {
			pkgs[p] = &pkgOutput{tests: map[string][]string{}}
		}
		return pkgs[p]
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if _, err := f.Write(append(line, '\n')); err != nil {
			return false, err
		}
		var ev event
		if json.Unmarshal(line, &ev) != nil {
			fmt.Fprintf(out, "%s\n", line) // not an event: as it came
			continue
		}
		switch {
		case ev.Action == "build-output":
			fmt.Fprint(out, ev.Output)
		case ev.Action == "build-fail":
			failed = true
		case ev.Action == "output" && ev.Test == "":
			p := get(ev.Package)
			p.lines = append(p.lines, ev.Output)
		case ev.Action == "output":
			p := get(ev.Package)
			p.tests[ev.Test] = append(p.tests[ev.Test], ev.Output)
		case ev.Action == "fail" && ev.Test != "":
			p := get(ev.Package)
			p.failed = append(p.failed, ev.Test)
		case ev.Test == "" && (ev.Action == "pass" || ev.Action == "skip" || ev.Action == "fail"):
			p := get(ev.Package)
			delete(pkgs, ev.Package)
			if ev.Action == "fail" {
				failed = true
				for _, t := range p.failed {
					for _, l := range p.tests[t] {
						if !quiet(l) {
							fmt.Fprint(out, l)
						}
					}
				}
				for _, l := range p.lines {
					if !quiet(l) {
						fmt.Fprint(out, l)
					}
				}
				continue
			}
			for _, l := range p.lines { // the "ok …" or "? … [no test files]" line
				if strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "?") {
					fmt.Fprint(out, l)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return failed, err
	}
	// A package that never ended (the run was cut): say so.
	for p := range pkgs {
		fmt.Fprintf(out, "FAIL\t%s\t(no result: the run ended first)\n", p)
		failed = true
	}
	meta.Finished, meta.Failed, meta.LoadEnd = time.Now().UTC(), failed, loadavg()
	b, _ := json.MarshalIndent(meta, "", "  ")
	return failed, os.WriteFile(filepath.Join(dir, "run.json"), append(b, '\n'), 0o644)
}

func gitCommit() (string, bool) {
	out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown", false
	}
	st, _ := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output()
	return strings.TrimSpace(string(out)), len(strings.TrimSpace(string(st))) > 0
}

// testResult is one test's outcome.
type testResult struct {
	name     string
	action   string // pass, fail, skip
	elapsed  float64
	subtests int
}

// pkgResult is one package's outcome.
type pkgResult struct {
	path    string
	action  string
	elapsed float64
	tests   []*testResult // top-level tests, by name
}

func (p *pkgResult) count(action string) int {
	n := 0
	for _, t := range p.tests {
		if t.action == action {
			n++
		}
	}
	return n
}

// measurement is a test's log line marked "measured: ".
type measurement struct {
	pkg, test, text string
}

// parse reads go-test.json: the packages' and tests' outcomes, and the
// lines the tests logged with "measured: ".
func parse(r io.Reader) ([]*pkgResult, []measurement, error) {
	var measured []measurement
	byPkg := map[string]*pkgResult{}
	tests := map[string]*testResult{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev event
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Package == "" {
			continue
		}
		p := byPkg[ev.Package]
		if p == nil {
			p = &pkgResult{path: ev.Package}
			byPkg[ev.Package] = p
		}
		if _, m, ok := strings.Cut(ev.Output, "measured: "); ok && ev.Action == "output" && ev.Test != "" {
			measured = append(measured, measurement{pkg: ev.Package, test: ev.Test, text: strings.TrimSpace(m)})
		}
		if ev.Action != "pass" && ev.Action != "fail" && ev.Action != "skip" {
			continue
		}
		if ev.Test == "" {
			p.action, p.elapsed = ev.Action, ev.Elapsed
			continue
		}
		top, _, sub := strings.Cut(ev.Test, "/")
		key := ev.Package + "\x00" + top
		t := tests[key]
		if t == nil {
			t = &testResult{name: top}
			tests[key] = t
			p.tests = append(p.tests, t)
		}
		if sub {
			t.subtests++
			continue
		}
		t.action, t.elapsed = ev.Action, ev.Elapsed
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	out := make([]*pkgResult, 0, len(byPkg))
	for _, p := range byPkg {
		sort.Slice(p.tests, func(i, j int) bool { return p.tests[i].name < p.tests[j].name })
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out, measured, nil
}

const module = "github.com/parley-chat/parley/"

// layer places a package in the test pyramid (docs/testing.md).
func layer(pkg string) string {
	switch p := strings.TrimPrefix(pkg, module); {
	case p == "test/load":
		return "load"
	case p == "test/integration", p == "cmd/parley":
		return "integration"
	case p == "internal/postgres":
		return "store"
	case p == "internal/cache", p == "internal/dbrouter", p == "internal/monitor", p == "internal/rollout",
		p == "internal/seed", p == "internal/stack":
		return "component"
	}
	return "unit"
}

var layerOrder = map[string]int{"unit": 0, "component": 1, "store": 2, "integration": 3, "load": 4}

func dur(s float64) string {
	if s < 60 {
		return fmt.Sprintf("%.1f s", s)
	}
	return fmt.Sprintf("%dm%02ds", int(s)/60, int(s)%60)
}

func table(dir, summaryPath, detailPath string) error {
	f, err := os.Open(filepath.Join(dir, "go-test.json"))
	if err != nil {
		return fmt.Errorf("no results (run `make test` first): %w", err)
	}
	defer f.Close()
	pkgs, measured, err := parse(f)
	if err != nil {
		return err
	}
	var meta run
	if b, err := os.ReadFile(filepath.Join(dir, "run.json")); err == nil {
		_ = json.Unmarshal(b, &meta)
	}
	loads, err := loadReports(filepath.Join(dir, "load"))
	if err != nil {
		return err
	}
	if summaryPath != "" {
		if err := os.WriteFile(summaryPath, []byte(summary(pkgs, meta, loads, measured)), 0o644); err != nil {
			return err
		}
	}
	if detailPath != "" {
		if err := os.WriteFile(detailPath, []byte(detail(pkgs, meta)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func runLine(m run) string {
	if m.Started.IsZero() {
		return "Run: unknown (no run.json)."
	}
	commit := m.Commit
	if m.Dirty {
		commit += " with uncommitted changes"
	}
	outcome := "passed"
	if m.Failed {
		outcome = "**failed**"
	}
	load := ""
	if m.LoadStart != "" {
		load = fmt.Sprintf(", load average %s at the start and %s at the end (other work shares the machine)", m.LoadStart, m.LoadEnd)
	}
	return fmt.Sprintf("Run: `make test` (go test -race -count=1 -json ./...) started %s, %s in all, %s; commit %s; %s, %d cores%s.",
		m.Started.Format("2006-01-02 15:04 UTC"), dur(m.Finished.Sub(m.Started).Seconds()), outcome, commit, m.Go, m.Cores, load)
}

func summary(pkgs []*pkgResult, m run, loads []*loadgen.ScenarioReport, measured []measurement) string {
	var b strings.Builder
	b.WriteString("<!-- BEGIN results: generated by scripts/report.sh (make report) from the latest `make test`; do not edit by hand -->\n")
	b.WriteString("### Latest run\n\n")
	b.WriteString(runLine(m) + " Per test: [test-results.md](test-results.md).\n\n")
	type agg struct {
		pkgs, tests, pass, fail, skip int
		elapsed                       float64
	}
	byLayer := map[string]*agg{}
	for _, p := range pkgs {
		a := byLayer[layer(p.path)]
		if a == nil {
			a = &agg{}
			byLayer[layer(p.path)] = a
		}
		a.pkgs++
		a.tests += len(p.tests)
		a.pass += p.count("pass")
		a.fail += p.count("fail")
		a.skip += p.count("skip")
		a.elapsed += p.elapsed
	}
	layers := make([]string, 0, len(byLayer))
	for l := range byLayer {
		layers = append(layers, l)
	}
	sort.Slice(layers, func(i, j int) bool { return layerOrder[layers[i]] < layerOrder[layers[j]] })
	b.WriteString("| layer | packages | tests | passed | failed | skipped | package time (sum) |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, l := range layers {
		a := byLayer[l]
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %s |\n", l, a.pkgs, a.tests, a.pass, a.fail, a.skip, dur(a.elapsed))
	}
	b.WriteString("\n| package | layer | result | tests | passed | failed | skipped | time |\n|---|---|---|---:|---:|---:|---:|---:|\n")
	for _, p := range pkgs {
		res := p.action
		switch {
		case p.action == "fail":
			res = "**FAIL**"
		case p.action == "skip" || len(p.tests) == 0:
			res = "no tests"
		case p.action == "":
			res = "**no result**"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %d | %d | %d | %d | %s |\n", strings.TrimPrefix(p.path, module), layer(p.path), res,
			len(p.tests), p.count("pass"), p.count("fail"), p.count("skip"), dur(p.elapsed))
	}
	b.WriteString("\n*time*: the package's wall time as `go test` reports it (its stack's start included); packages run in parallel, so the sum is more than the run's time.\n")
	if len(loads) > 0 {
		b.WriteString("\nLoad scenarios of this run (`test/load`, **shortened smoke runs**: seconds, tens of connections, against `parley serve` on the test stack — not the seed's 5 minutes at 5k–10k connections; those figures are `scripts/perf-scenarios.sh`'s in docs/performance.md):\n\n")
		b.WriteString("| scenario | duration | connections | offered req/s | achieved req/s | p50 ms | p95 ms | p99 ms | error rate | gates |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
		for _, s := range loads {
			offered := "—"
			if s.OfferedRPS != nil {
				offered = fmt.Sprintf("%.0f", *s.OfferedRPS)
			}
			gates := "pass"
			if !s.Passed {
				gates = "**fail**"
			}
			fmt.Fprintf(&b, "| %s | %.0f s | %d | %s | %.1f | %.2f | %.2f | %.2f | %.2f%% | %s |\n", s.Name, s.DurationS,
				s.Connections.Established, offered, s.RPS, s.LatencyMs.P50, s.LatencyMs.P95, s.LatencyMs.P99, 100*s.ErrorRate, gates)
		}
	}
	if len(measured) > 0 {
		b.WriteString("\nMeasured in this run (the tests' log lines marked `measured:`):\n\n")
		for _, m := range measured {
			fmt.Fprintf(&b, "- `%s` %s: %s\n", strings.TrimPrefix(m.pkg, module), m.test, m.text)
		}
	}
	b.WriteString("<!-- END results -->\n")
	return b.String()
}

func detail(pkgs []*pkgResult, m run) string {
	var b strings.Builder
	b.WriteString("# Test results\n\nGenerated by `scripts/report.sh` (`make report`) from the latest `make test`'s `go test -json` output; do not edit by hand. How the tests are organised: [testing.md](testing.md).\n\n")
	b.WriteString(runLine(m) + "\n")
	for _, p := range pkgs {
		fmt.Fprintf(&b, "\n## `%s` (%s, %s)\n\n", strings.TrimPrefix(p.path, module), layer(p.path), dur(p.elapsed))
		if len(p.tests) == 0 {
			b.WriteString("No tests.\n")
			continue
		}
		b.WriteString("| test | result | subtests | time |\n|---|---|---:|---:|\n")
		for _, t := range p.tests {
			res := t.action
			switch t.action {
			case "fail":
				res = "**FAIL**"
			case "":
				res = "**no result**"
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %s |\n", t.name, res, t.subtests, dur(t.elapsed))
		}
	}
	return b.String()
}

// loadReports reads the load generator's JSON reports in dir (none: nil).
func loadReports(dir string) ([]*loadgen.ScenarioReport, error) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	sort.Strings(files)
	var out []*loadgen.ScenarioReport
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var r loadgen.Report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, r.Scenarios...)
	}
	if len(out) == 0 && len(files) > 0 {
		return nil, errors.New(dir + ": reports without scenarios")
	}
	return out, nil
}
