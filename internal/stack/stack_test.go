package stack_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"

	"github.com/parley-chat/parley/internal/stack"
	"github.com/parley-chat/parley/internal/stack/stacktest"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(stacktest.Main(m)) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func componentByName(t *testing.T, sts []stack.ComponentStatus, name string) stack.ComponentStatus {
	t.Helper()
	for _, c := range sts {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no component %q in %+v", name, sts)
	return stack.ComponentStatus{}
}

func TestStackComponentsAnswer(t *testing.T) {
	s := stacktest.ForTest(t)
	ctx := ctxT(t)
	sts := s.Status(ctx)
	if !stack.Healthy(sts) {
		t.Fatalf("stack not healthy: %+v", sts)
	}
	if d := componentByName(t, sts, "replica").Detail; !strings.Contains(d, "streaming") {
		t.Errorf("replica detail = %q, want streaming", d)
	}

	// PgBouncer's admin console answers SHOW POOLS and lists the _ro entry.
	admin, err := stack.ConnectAdmin(ctx, s.PgBouncerAdminURL())
	if err != nil {
		t.Fatalf("admin console: %v", err)
	}
	defer admin.Close(ctx)
	rows, err := admin.Query(ctx, "SHOW DATABASES")
	if err != nil {
		t.Fatalf("SHOW DATABASES: %v", err)
	}
	names := map[string]bool{}
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		names[vals[0].(string)] = true
	}
	if !names[stack.AppDB] || !names[stack.AppDB+"_ro"] {
		t.Errorf("PgBouncer databases = %v, want %s and %s_ro", names, stack.AppDB, stack.AppDB)
	}
	if _, err := admin.Exec(ctx, "SHOW POOLS"); err != nil {
		t.Errorf("SHOW POOLS: %v", err)
	}

	// Through PgBouncer (transaction pooling needs exec mode) to the primary,
	// and through the _ro entry to the replica.
	for _, tc := range []struct {
		name, db     string
		wantRecovery bool
	}{{"primary via pgbouncer", stack.AppDB, false}, {"replica via pgbouncer _ro", stack.AppDB + "_ro", true}} {
		cfg, err := pgx.ParseConfig(strings.Replace(s.PgBouncerURL(), "/"+stack.AppDB+"?", "/"+tc.db+"?", 1))
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var inRecovery bool
		if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		c.Close(ctx)
		if inRecovery != tc.wantRecovery {
			t.Errorf("%s: pg_is_in_recovery = %v, want %v", tc.name, inRecovery, tc.wantRecovery)
		}
	}

	if err := stack.RedisPing(ctx, s.RedisAddr()); err != nil {
		t.Errorf("redis PING: %v", err)
	}
}

func TestReplicaStreamsWrites(t *testing.T) {
	s := stacktest.ForTest(t)
	ctx := ctxT(t)
	db := s.NewDatabase(t)
	p, err := pgx.Connect(ctx, db.PrimaryURL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	if _, err := p.Exec(ctx, `CREATE TABLE probe (v text); INSERT INTO probe VALUES ('hello')`); err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitReplicaCaughtUp(ctx, db.PrimaryURL, db.ReplicaURL); err != nil {
		t.Fatal(err)
	}
	r, err := pgx.Connect(ctx, db.ReplicaURL)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	var v string
	var inRecovery bool
	if err := r.QueryRow(ctx, `SELECT v, pg_is_in_recovery() FROM probe`).Scan(&v, &inRecovery); err != nil {
		t.Fatalf("read on replica: %v", err)
	}
	if v != "hello" || !inRecovery {
		t.Errorf("replica read v=%q in_recovery=%v", v, inRecovery)
	}
	// The app role may pause and resume replay (GRANT in the database).
	if _, err := r.Exec(ctx, `SELECT pg_wal_replay_pause()`); err != nil {
		t.Fatalf("pause replay as app role: %v", err)
	}
	if _, err := r.Exec(ctx, `SELECT pg_wal_replay_resume()`); err != nil {
		t.Fatalf("resume replay as app role: %v", err)
	}
}

// TestUpIsIdempotentAndRepairs kills Redis, sees it in Status, and checks that
// stack.Up (run twice) restarts it and reuses everything else.
func TestUpIsIdempotentAndRepairs(t *testing.T) {
	s := stacktest.ForTest(t)
	ctx := ctxT(t)
	before := s.Status(ctx)
	if err := s.StopComponent(ctx, "redis"); err != nil {
		t.Fatal(err)
	}
	if r := componentByName(t, s.Status(ctx), "redis"); r.Running {
		t.Fatalf("redis still running after stop: %+v", r)
	}
	for i := 0; i < 2; i++ {
		s2, err := stack.Up(ctx, stack.Config{DataDir: s.Dir})
		if err != nil {
			t.Fatalf("up #%d: %v", i+1, err)
		}
		if s2.State != s.State {
			t.Errorf("up #%d changed state: %+v -> %+v", i+1, s.State, s2.State)
		}
	}
	after := s.Status(ctx)
	if !stack.Healthy(after) {
		t.Fatalf("not healthy after up: %+v", after)
	}
	for _, name := range []string{"primary", "replica", "pgbouncer"} {
		if b, a := componentByName(t, before, name).PID, componentByName(t, after, name).PID; b != a {
			t.Errorf("%s restarted by idempotent up: pid %d -> %d", name, b, a)
		}
	}
}

func TestReplicaRestart(t *testing.T) {
	s := stacktest.ForTest(t)
	ctx := ctxT(t)
	if err := s.StopComponent(ctx, "replica"); err != nil {
		t.Fatal(err)
	}
	if r := componentByName(t, s.Status(ctx), "replica"); r.Running {
		t.Fatalf("replica running after stop")
	}
	if _, err := stack.Up(ctx, stack.Config{DataDir: s.Dir}); err != nil {
		t.Fatal(err)
	}
	if d := componentByName(t, s.Status(ctx), "replica").Detail; !strings.Contains(d, "streaming") {
		t.Errorf("replica after restart: %q", d)
	}
}

// TestUpDownLeavesNothing brings a second stack up and down in its own dir
// and checks that no process of it survives.
func TestUpDownLeavesNothing(t *testing.T) {
	ctx := ctxT(t)
	dir, err := os.MkdirTemp("", "parley-updown-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := stack.Up(ctx, stack.Config{DataDir: dir, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	// Every component, each with a process: a check over whatever Status
	// happens to list would hold for a list missing some (or all) of them.
	process := map[string]string{"primary": "postgres", "replica": "postgres", "pgbouncer": "pgbouncer", "redis": "redis-server"}
	up := s.Status(ctx)
	var names []string
	for _, c := range up {
		names = append(names, c.Name)
		if !c.Running || c.PID == 0 {
			t.Fatalf("component not running after up: %+v", c)
		}
	}
	if want := []string{"primary", "replica", "pgbouncer", "redis"}; !slices.Equal(names, want) {
		t.Fatalf("status lists %v, want %v", names, want)
	}
	if err := s.Down(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range up {
		if stack.Alive(c.PID, process[c.Name]) {
			t.Errorf("%s (pid %d) still running after down", c.Name, c.PID)
		}
	}
	down := s.Status(ctx)
	if len(down) != len(up) {
		t.Errorf("status after down lists %d components, want %d: %+v", len(down), len(up), down)
	}
	for _, c := range down {
		if c.Running {
			t.Errorf("status after down: %s running (%s)", c.Name, c.Detail)
		}
	}
	// A second down is harmless.
	if err := s.Down(ctx); err != nil {
		t.Errorf("second down: %v", err)
	}
}

func TestMissingBinaryMessage(t *testing.T) {
	t.Setenv("PATH", "/nonexistent")
	t.Setenv("PARLEY_PG_BINDIR", "/nonexistent")
	t.Cleanup(stack.SetDebianPGBin("/nonexistent"))
	_, err := stack.FindBinaries()
	if err == nil {
		t.Fatal("stack.FindBinaries found PostgreSQL with nothing on PATH")
	}
	msg := err.Error()
	if !errors.Is(err, stack.ErrMissingBinary) || !strings.Contains(msg, "apt-get install postgresql-15") || strings.Contains(msg, "\n") {
		t.Errorf("want one line naming the Debian package, got %q", msg)
	}
}

// TestPrometheusScrapesRegisteredTargets registers a server that exports one
// metric through the targets folder and requires the stack's Prometheus to
// scrape it within seconds, with the file's labels, and to drop it when the
// file goes.
func TestPrometheusScrapesRegisteredTargets(t *testing.T) {
	s := stacktest.ForTest(t)
	ctx := ctxT(t)
	if d := componentByName(t, s.Status(ctx), "prometheus"); !d.Running || !strings.Contains(d.Detail, "ready") {
		t.Fatalf("prometheus status: %+v", d)
	}
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "parley_stack_test_value", Help: "test"})
	g.Set(42)
	reg.MustRegister(g)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	remove, err := s.RegisterTarget("stacktest", strings.TrimPrefix(srv.URL, "http://"), map[string]string{"deployment": "stacktest"})
	if err != nil {
		t.Fatal(err)
	}
	client, err := promapi.NewClient(promapi.Config{Address: s.PrometheusURL()})
	if err != nil {
		t.Fatal(err)
	}
	api := promv1.NewAPI(client)
	value := func(q string) (float64, bool) {
		v, _, _, err := api.Query(ctx, q, time.Now())
		if err != nil {
			t.Fatalf("query %s: %v", q, err)
		}
		vec, _ := v.(model.Vector)
		if len(vec) == 0 {
			return 0, false
		}
		return float64(vec[0].Value), true
	}
	took := stacktest.WaitFor(t, 30*time.Second, "the registered target's metric in Prometheus", func() bool {
		v, ok := value(`parley_stack_test_value{deployment="stacktest",job="parley"}`)
		return ok && v == 42
	})
	t.Logf("registered target scraped after %v", took)
	remove()
	stacktest.WaitFor(t, 30*time.Second, "the removed target's series to go stale", func() bool {
		_, ok := value(`parley_stack_test_value{deployment="stacktest"}`)
		return !ok
	})
	for _, kv := range s.Env() {
		if kv[0] == "PARLEY_PROMETHEUS_URL" && kv[1] == s.PrometheusURL() {
			return
		}
	}
	t.Errorf("stack env has no PARLEY_PROMETHEUS_URL=%s: %v", s.PrometheusURL(), s.Env())
}
