package stack_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"

	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/internal/cache"
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
		if !reflect.DeepEqual(s2.State, s.State) {
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
	process := map[string]string{"primary": "postgres", "replica": "postgres", "pgbouncer": "pgbouncer", "redis": "redis-server", "prometheus": "prometheus"}
	up := s.Status(ctx)
	var names []string
	for _, c := range up {
		names = append(names, c.Name)
		if !c.Running || c.PID == 0 {
			t.Fatalf("component not running after up: %+v", c)
		}
	}
	if want := []string{"primary", "replica", "pgbouncer", "redis", "prometheus"}; !slices.Equal(names, want) {
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

// TestShapes brings a stack of its own through the shapes of --replicas and
// --redis: the default (one replica, one Redis), grown to two replicas and
// a Redis Cluster (each replica streaming from its own slot, the cluster
// serving every slot, the environment naming all of them), a cluster node
// stopped and brought back by up, and shrunk again (the extra replica
// stopped, its slot dropped, its data deleted; the cluster stopped).
func TestShapes(t *testing.T) {
	ctx := ctxT(t)
	dir, err := os.MkdirTemp("", "parley-shapes-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var log stacktest.LogBuffer
	up := func(cfg stack.Config) *stack.Stack {
		t.Helper()
		cfg.DataDir, cfg.Fast, cfg.Log = dir, true, &log
		s, err := stack.Up(ctx, cfg)
		if err != nil {
			t.Fatalf("up %+v: %v\n%s", cfg, err, log.String())
		}
		return s
	}
	s := up(stack.Config{})
	defer func() { _ = s.Down(context.Background()) }()
	names := func(s *stack.Stack) []string {
		var out []string
		for _, c := range s.Status(ctx) {
			if !c.Running {
				t.Errorf("%s not running: %+v", c.Name, c)
			}
			out = append(out, c.Name)
		}
		return out
	}
	if got, want := names(s), []string{"primary", "replica", "pgbouncer", "redis", "prometheus"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("default shape: components %v, want %v", got, want)
	}
	slots := func() []string {
		t.Helper()
		conn, err := pgx.Connect(ctx, s.SuperuserURL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		rows, err := conn.Query(ctx, `SELECT slot_name || ':' || active FROM pg_replication_slots ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	// Grown: two replicas, a Redis Cluster.
	s = up(stack.Config{Replicas: 2, Redis: stack.RedisCluster})
	want := []string{"primary", "replica", "replica2", "pgbouncer", "redis1", "redis2", "redis3", "prometheus"}
	if got := names(s); !reflect.DeepEqual(got, want) {
		t.Fatalf("grown: components %v, want %v", got, want)
	}
	if got := slots(); !reflect.DeepEqual(got, []string{"parley_replica2:true", "parley_replica:true"}) {
		t.Errorf("replication slots %v, want both replicas' slots active", got)
	}
	env := map[string]string{}
	for _, kv := range s.Env() {
		env[kv[0]] = kv[1]
	}
	urls := strings.Split(env["PARLEY_REPLICA_URLS"], ",")
	if len(urls) != 2 || urls[0] != env["PARLEY_REPLICA_URL"] || urls[0] == urls[1] {
		t.Fatalf("PARLEY_REPLICA_URLS = %q (PARLEY_REPLICA_URL %q): want two replicas, the first PARLEY_REPLICA_URL", urls, env["PARLEY_REPLICA_URL"])
	}
	if err := stack.WaitReplicaCaughtUp(ctx, s.PrimaryURL(), urls[1]); err != nil {
		t.Fatalf("replica2 does not replay: %v", err)
	}
	checkCluster := func() {
		t.Helper()
		rc, err := cache.NewClient(env["PARLEY_REDIS_URL"])
		if err != nil {
			t.Fatalf("PARLEY_REDIS_URL %q: %v", env["PARLEY_REDIS_URL"], err)
		}
		defer rc.Close()
		cc, ok := rc.(*redis.ClusterClient)
		if !ok {
			t.Fatalf("cache.NewClient(%q) is a %T, want a cluster client", env["PARLEY_REDIS_URL"], rc)
		}
		// One key in each node's slots: written and read through the
		// cluster client, each answered by a different node.
		addrs := map[string]bool{}
		for _, key := range []string{"{a}", "{b}", "{c}", "{d}", "{e}", "{f}"} {
			if err := cc.Set(ctx, key, "v", time.Minute).Err(); err != nil {
				t.Fatalf("SET %s through the cluster: %v", key, err)
			}
			node, err := cc.MasterForKey(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			addrs[node.Options().Addr] = true
		}
		if len(addrs) != 3 {
			t.Errorf("6 keys landed on %d nodes (%v), want all 3", len(addrs), addrs)
		}
	}
	checkCluster()

	// A cluster node stopped shows in status; up (no shape given: as
	// remembered) brings it back into the cluster.
	if err := s.StopComponent(ctx, "redis2"); err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Status(ctx) {
		if c.Name == "redis2" && c.Running {
			t.Fatalf("redis2 running after stop: %+v", c)
		}
	}
	s = up(stack.Config{})
	if got := names(s); !reflect.DeepEqual(got, want) {
		t.Fatalf("after repair: components %v, want %v", got, want)
	}
	checkCluster()

	// Shrunk: one replica, a single Redis again.
	s = up(stack.Config{Replicas: 1, Redis: stack.RedisSingle})
	if got, want := names(s), []string{"primary", "replica", "pgbouncer", "redis", "prometheus"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("shrunk: components %v, want %v", got, want)
	}
	if got := slots(); !reflect.DeepEqual(got, []string{"parley_replica:true"}) {
		t.Errorf("replication slots after shrinking %v, want the first replica's only", got)
	}
	if _, err := os.Stat(dir + "/replica2"); !os.IsNotExist(err) {
		t.Errorf("replica2's data dir after shrinking: %v", err)
	}
	for _, pidFile := range []string{"redis-cluster/node1/redis.pid", "redis-cluster/node2/redis.pid", "redis-cluster/node3/redis.pid"} {
		b, _ := os.ReadFile(dir + "/" + pidFile)
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); stack.Alive(pid, "redis-server") {
			t.Errorf("cluster node %s (pid %d) still runs in single mode", pidFile, pid)
		}
	}
	if !strings.Contains(log.String(), "replica2   removed") {
		t.Errorf("no progress line for the removed replica:\n%s", log.String())
	}
	t.Logf("progress:\n%s", log.String())
}
