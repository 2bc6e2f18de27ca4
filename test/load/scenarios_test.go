// Package load runs the load generator's built-in scenarios (history, send,
// mixed, spike) for a few seconds each against a real `parley serve` process
// on the test stack: the binary is built from this module, migrates a fresh
// database and serves it through PgBouncer, the streaming replica and Redis,
// exactly as in production. The scenarios run at a small scale (tens of
// connections, tens of requests per second); the full-size runs, at the seed's
// 5k–10k connections, are scripts/perf-scenarios.sh's job (docs/performance.md).
package load

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/loadgen"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

func TestMain(m *testing.M) {
	os.Exit(stacktest.Main(m, stacktest.Migrated(postgres.SchemaFingerprint(), postgres.Migrate)))
}

// server is one `parley serve` process on a fresh database.
type server struct {
	bin        string // the parley binary
	url        string // http://127.0.0.1:port
	port       int
	token      string // admin token
	db         stacktest.Database
	pid        int
	logPath    string
	primaryURL string
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startServe builds parley, migrates a fresh database with `parley migrate`
// and runs `parley serve` on it as a separate process until the test ends
// (SIGTERM, then wait; SIGKILL if it does not stop).
func startServe(t *testing.T) *server {
	t.Helper()
	s := stacktest.ForTest(t)
	dir := t.TempDir()
	bin := stacktest.BuildParley(t, dir)
	db := s.NewDatabase(t)

	mig := exec.Command(bin, "migrate", "--database-url", db.PrimaryURL)
	if out, err := mig.CombinedOutput(); err != nil {
		t.Fatalf("parley migrate: %v\n%s", err, out)
	}

	b := make([]byte, 16)
	_, _ = rand.Read(b)
	srv := &server{bin: bin, token: "adm_" + hex.EncodeToString(b), db: db, primaryURL: db.PrimaryURL}
	// A port picked free may be taken before serve binds it: try again then.
	for attempt := 1; ; attempt++ {
		srv.port = freePort(t)
		srv.url = "http://127.0.0.1:" + strconv.Itoa(srv.port)
		srv.logPath = filepath.Join(dir, fmt.Sprintf("serve-%d.log", attempt))
		err := srv.start(t, s)
		if err == nil {
			return srv
		}
		if attempt == 3 || !strings.Contains(srv.logTail(), "address already in use") {
			t.Fatalf("parley serve: %v\n%s", err, srv.logTail())
		}
	}
}

func (srv *server) start(t *testing.T, s *stacktest.Stack) error {
	logf, err := os.Create(srv.logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(srv.bin, "serve")
	cmd.Env = append(os.Environ(),
		"PARLEY_PRIMARY_URL="+srv.db.PgBouncerURL, // exec mode (the default) for PgBouncer's transaction pooling
		"PARLEY_REPLICA_URLS="+srv.db.ReplicaURL,
		"PARLEY_REDIS_URL="+s.RedisURL(),
		"PARLEY_PGBOUNCER_ADMIN_URL="+s.PgBouncerAdminURL(),
		"PARLEY_ADMIN_TOKEN="+srv.token,
		"PARLEY_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(srv.port),
		// Each test database gets its own cache namespace in the shared Redis.
		"PARLEY_CACHE_PREFIX="+srv.db.Name+":",
	)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}

	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("exited before it was ready: %v", err)
		default:
		}
		resp, err := client.Get(srv.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("/readyz not 200 within 60s (last: %v)", errOrStatus(resp, err))
		}
		time.Sleep(100 * time.Millisecond)
	}
	client.CloseIdleConnections()
	srv.pid = cmd.Process.Pid
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("parley serve log (tail):\n%s", srv.logTail())
		}
	})
	return nil
}

func errOrStatus(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

// logTail is the last lines of serve's log that are not access-log lines.
func (srv *server) logTail() string {
	b, err := os.ReadFile(srv.logPath)
	if err != nil {
		return err.Error()
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); !strings.Contains(l, `"msg":"request"`) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// heldConns counts the server side of established TCP connections on the
// server's port (/proc/net/tcp and tcp6), i.e. what the server holds open.
func heldConns(port int) int {
	n := 0
	want := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) > 3 && strings.HasSuffix(fields[1], want) && fields[3] == "01" {
				n++
			}
		}
	}
	return n
}

// watchHeld samples heldConns until stop is closed and returns the most seen.
func watchHeld(port int) (stop func() int) {
	done := make(chan struct{})
	var peak int
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			peak = max(peak, heldConns(port))
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	return func() int {
		close(done)
		wg.Wait()
		return peak
	}
}

// countRows counts users and messages in the test database.
func countRows(t *testing.T, url string) (users, messages int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM messages)`).Scan(&users, &messages); err != nil {
		t.Fatal(err)
	}
	return users, messages
}

// The scenarios at test size: tens of connections and requests per second
// for about three seconds (the spike compresses its 2m/1m/5m/1m stages into
// 5 s: 40 → 80 connections, 50 → 100 req/s and back). Scale 0.02 sizes the
// data each scenario creates first (10 users, 4 conversations, 100 messages).
var testScenarios = []struct {
	name        string
	connections int
	rate        float64
	duration    time.Duration
	stages      int // stage marks expected in the report
}{
	{"history", 50, 80, 3 * time.Second, 1},
	{"send", 50, 60, 3 * time.Second, 1},
	{"mixed", 80, 80, 3 * time.Second, 1},
	{"spike", 40, 50, 5 * time.Second, 4},
}

// TestScenariosAgainstServe runs each built-in scenario, then `parley load`
// itself, against one `parley serve` process.
func TestScenariosAgainstServe(t *testing.T) {
	srv := startServe(t)
	builtin := loadgen.BuiltinScenarios()
	for _, tc := range testScenarios {
		t.Run(tc.name, func(t *testing.T) {
			usersBefore, msgsBefore := countRows(t, srv.primaryURL)
			var progress bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			stopWatch := watchHeld(srv.port)
			rep, err := loadgen.RunScenario(ctx, loadgen.Options{
				Target: srv.url, AdminToken: srv.token, Scenario: tc.name,
				Scale: 0.02, Connections: tc.connections, Rate: tc.rate, Duration: tc.duration,
				Progress: &progress,
			})
			serverPeak := stopWatch()
			if err != nil {
				t.Fatalf("RunScenario: %v\nprogress:\n%s", err, progress.String())
			}
			var text bytes.Buffer
			rep.WriteText(&text)
			t.Logf("%s", text.String())
			if t.Failed() {
				return
			}
			if len(rep.Scenarios) != 1 {
				t.Fatalf("%d scenario reports, want 1", len(rep.Scenarios))
			}
			sr := rep.Scenarios[0]
			sc := builtin[tc.name]

			if sr.Name != tc.name || sr.Model != "open" {
				t.Errorf("name %q model %q, want %q open", sr.Name, sr.Model, tc.name)
			}
			if sr.Requests <= 0 {
				t.Fatalf("no requests")
			}
			if sr.ErrorRate >= 0.01 {
				t.Errorf("error rate %.2f%% (%d of %d; by class %v; statuses %v), want < 1%%",
					100*sr.ErrorRate, sr.Errors, sr.Requests, sr.ErrorsByClass, sr.StatusCodes)
			}
			// Open model: every intended send was made and answered.
			if sr.OfferedRPS == nil || sr.SendLag == nil {
				t.Fatalf("open-model report without offered_rps or send_lag")
			}
			if sr.SendLag.Dropped != 0 || sr.Requests != sr.SendLag.Offered {
				t.Errorf("%d requests finished of %d offered (%d dropped)", sr.Requests, sr.SendLag.Offered, sr.SendLag.Dropped)
			}
			// Connections: what the profile asked for at its peak, held on
			// the generator's side and seen established on the server's.
			wantConns := tc.connections
			if tc.name == "spike" {
				wantConns = 2 * tc.connections // 5k → 10k in the seed
			}
			c := sr.Connections
			if c.Requested != wantConns || c.Established != int64(c.Requested) || c.Failed != 0 {
				t.Errorf("connections requested %d established %d failed %d, want %d established", c.Requested, c.Established, c.Failed, wantConns)
			}
			if serverPeak < wantConns {
				t.Errorf("the server held at most %d connections on its port, want >= %d", serverPeak, wantConns)
			}
			// Every operation of the scenario's mix ran and succeeded.
			for op := range sc.Mix {
				var found bool
				for _, o := range sr.Operations {
					if o.Name == op {
						found = true
						if o.Requests == 0 || o.ErrorRate >= 0.01 {
							t.Errorf("operation %s: %d requests, error rate %.2f%%", op, o.Requests, 100*o.ErrorRate)
						}
					}
				}
				if !found {
					t.Errorf("operation %s of the mix missing from the report", op)
				}
			}
			for code, n := range sr.StatusCodes {
				if !strings.HasPrefix(code, "2") {
					t.Errorf("status %s ×%d", code, n)
				}
			}
			// The gates: the scenario's SLOs and rps >= 90% of offered.
			if len(sr.Thresholds) < len(sc.Thresholds)+1 {
				t.Errorf("%d thresholds evaluated, want the scenario's %d and the rps gate", len(sr.Thresholds), len(sc.Thresholds))
			}
			for _, th := range sr.Thresholds {
				if !th.OK {
					t.Errorf("threshold %s failed (actual %g)", th.Expr, th.Actual)
				}
			}
			if !sr.Passed || !rep.Passed {
				t.Errorf("passed: scenario %v, report %v; failed: %v", sr.Passed, rep.Passed, rep.FailedThresholds())
			}
			if len(sr.Stages) != tc.stages {
				t.Errorf("%d stage marks, want %d", len(sr.Stages), tc.stages)
			}
			if len(sr.Timeline) < int(tc.duration/time.Second) {
				t.Errorf("timeline of %d intervals for a %s run", len(sr.Timeline), tc.duration)
			}
			// The data the scenario created, and every send, are in the
			// database (unique Idempotency-Keys: one row per successful send).
			if sr.Setup == nil {
				t.Fatal("no setup in the report")
			}
			usersAfter, msgsAfter := countRows(t, srv.primaryURL)
			if got := usersAfter - usersBefore; got != int64(sr.Setup.Users) {
				t.Errorf("%d users created, the report says %d", got, sr.Setup.Users)
			}
			// A send that failed on the client's side (a timeout) may still
			// have been written, so the rows are bounded by the acknowledged
			// sends below and the attempted ones above: exact when none
			// failed, and checked whatever the errors.
			var acked, attempted int64
			for _, o := range sr.Operations {
				if o.Name == loadgen.OpSend {
					acked, attempted = o.Requests-o.Errors, o.Requests
				}
			}
			setup := int64(sr.Setup.Messages)
			if got := msgsAfter - msgsBefore; got < setup+acked || got > setup+attempted {
				t.Errorf("%d messages written, want between %d and %d (setup %d + %d acknowledged sends, %d attempted)",
					got, setup+acked, setup+attempted, setup, acked, attempted)
			}
			checkJSONSchema(t, rep)
			keepReport(t, tc.name, rep)
		})
	}
	t.Run("cli", func(t *testing.T) { testLoadCommand(t, srv) })
}

// keepReport writes the scenario's JSON report to
// $PARLEY_TEST_RESULTS/load/<name>.json when `make test` sets it (the
// results table of docs/testing.md shows them: scripts/report.sh).
func keepReport(t *testing.T, name string, rep *loadgen.Report) {
	t.Helper()
	dir := os.Getenv("PARLEY_TEST_RESULTS")
	if dir == "" {
		return
	}
	dir = filepath.Join(dir, "load")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteJSONFile(filepath.Join(dir, name+".json")); err != nil {
		t.Fatal(err)
	}
}

// checkJSONSchema checks the JSON report carries the documented fields
// (docs/loadgen.md, "Reports").
func checkJSONSchema(t *testing.T, rep *loadgen.Report) {
	t.Helper()
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	checkJSONBytes(t, buf.Bytes(), true)
}

func checkJSONBytes(t *testing.T, b []byte, open bool) {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("JSON report: %v", err)
	}
	need(t, "report", doc, "passed", "target", "started_at", "generator", "scenarios")
	scs, _ := doc["scenarios"].([]any)
	if len(scs) == 0 {
		t.Fatal("JSON report: no scenarios")
	}
	for _, s := range scs {
		sc, _ := s.(map[string]any)
		need(t, "scenario", sc, "name", "description", "model", "duration_s", "requests", "errors", "error_rate", "rps",
			"latency_ms", "connections", "errors_by_class", "status_codes", "operations", "thresholds", "passed",
			"generator", "setup", "stages", "timeline")
		if open {
			need(t, "scenario", sc, "offered_rps", "service_time_ms", "send_lag")
			need(t, "send_lag", obj(sc["send_lag"]), "p50_ms", "p99_ms", "max_ms", "late", "late_no_free_connection",
				"dropped", "offered", "scheduler_p99_ms", "scheduler_max_ms")
		}
		need(t, "latency_ms", obj(sc["latency_ms"]), "p50", "p90", "p95", "p99", "p99_9", "max", "mean")
		need(t, "connections", obj(sc["connections"]), "requested", "established", "failed", "reconnects")
		need(t, "generator", obj(sc["generator"]), "cpu_seconds", "cpu_percent", "cpu_percent_max", "budget_cores", "bound")
		need(t, "setup", obj(sc["setup"]), "users", "conversations", "messages", "seconds")
		for _, o := range list(sc["operations"]) {
			need(t, "operation", obj(o), "name", "requests", "errors", "error_rate", "rps", "latency_ms")
		}
		for _, th := range list(sc["thresholds"]) {
			need(t, "threshold", obj(th), "expr", "ok", "actual")
		}
		for _, st := range list(sc["stages"]) {
			need(t, "stage", obj(st), "index", "start_s", "end_s", "connections")
		}
		tl := list(sc["timeline"])
		if len(tl) == 0 {
			t.Error("JSON report: empty timeline")
		}
		for _, iv := range tl {
			need(t, "timeline", obj(iv), "t", "requests", "errors", "rps", "p50_ms", "p90_ms", "p99_ms", "max_ms",
				"connections", "cpu_percent", "stage")
		}
	}
}

func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }
func list(v any) []any         { l, _ := v.([]any); return l }

// need reports the keys missing from m.
func need(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	var missing []string
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		have := make([]string, 0, len(m))
		for k := range m {
			have = append(have, k)
		}
		sort.Strings(have)
		t.Errorf("JSON %s: missing %v (has %v)", what, missing, have)
	}
}

// testLoadCommand runs `parley load` itself, as scripts/perf-scenarios.sh
// does, against `parley serve`: exit status 0 and a JSON report with the
// schema's fields; then a gate that must fail exits 99.
func testLoadCommand(t *testing.T, srv *server) {
	out := filepath.Join(t.TempDir(), "load.json")
	run := func(extra ...string) (int, string) {
		args := append([]string{"load", "--target", srv.url, "--admin-token", srv.token, "--scenario", "send",
			"--scale", "0.02", "--connections", "30", "--rate", "40", "--duration", "2s", "--quiet", "--json", out}, extra...)
		cmd := exec.Command(srv.bin, args...)
		var outb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &outb, &outb
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, outb.String()
		case errors.As(err, &ee):
			return ee.ExitCode(), outb.String()
		}
		t.Fatalf("parley load: %v", err)
		return -1, ""
	}
	code, output := run()
	if code != 0 {
		t.Fatalf("parley load exited %d, want 0\n%s", code, output)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	checkJSONBytes(t, b, true)
	var rep loadgen.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Passed || len(rep.Scenarios) != 1 || rep.Scenarios[0].Requests == 0 || rep.Scenarios[0].Errors != 0 ||
		rep.Scenarios[0].Connections.Established != 30 {
		t.Errorf("JSON report: %s", b)
	}

	// A gate no real server meets: the command says so with exit status 99.
	code, output = run("--threshold", "p50<1us")
	if code != 99 {
		t.Errorf("parley load with a failing gate exited %d, want 99\n%s", code, output)
	}
}
