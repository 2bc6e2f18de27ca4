package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/internal/app"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/stack"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

func TestMain(m *testing.M) {
	code := stacktest.Main(m, stacktest.Migrated(postgres.SchemaFingerprint(), postgres.Migrate))
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

func TestMigrateTwice(t *testing.T) {
	s := stacktest.ForTest(t)
	db := s.NewEmptyDatabase(t)
	ctx := context.Background()
	// Through PgBouncer, as `parley dev` runs the primary pool.
	for i := 0; i < 2; i++ {
		if err := migrate(ctx, db.PgBouncerURL); err != nil {
			t.Fatalf("migrate #%d: %v", i+1, err)
		}
	}
	pool, err := pgxpool.New(ctx, db.PrimaryURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ms, err := postgres.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var rows, version int
	if err := pool.QueryRow(ctx, `SELECT count(*), max(version) FROM schema_migrations`).Scan(&rows, &version); err != nil {
		t.Fatal(err)
	}
	if rows != len(ms) || version != ms[len(ms)-1].Version {
		t.Errorf("schema_migrations has %d rows up to %d, want %d up to %d", rows, version, len(ms), ms[len(ms)-1].Version)
	}
}

type readyBody struct {
	Status     string `json:"status"`
	Components map[string]struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	} `json:"components"`
}

func getReady(t *testing.T, addr string) (int, readyBody) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var rb readyBody
	if err := json.Unmarshal(b, &rb); err != nil {
		t.Fatalf("readyz body %q: %v", b, err)
	}
	return resp.StatusCode, rb
}

// TestServeReadiness runs the real serve() against the stack: ready with
// everything up, degraded (still 200) with the replica stopped, and a clean
// shutdown when its context ends.
func TestServeReadiness(t *testing.T) {
	s := stacktest.ForTest(t)
	db := s.NewDatabase(t)
	if err := migrate(context.Background(), db.PrimaryURL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	cfg := serveConfig{HTTPAddr: "127.0.0.1:0", AccessLogShare: 1, Config: app.Config{
		PrimaryURL: db.PgBouncerURL, PrimaryExecMode: "exec",
		ReplicaURLs: []string{db.ReplicaURL}, ReplicaExecMode: "cache_statement",
		RedisURL: s.RedisURL(), AdminToken: "test-admin", ShutdownTimeout: 5 * time.Second,
	}}
	go func() { done <- serve(ctx, cfg, func(a string) { addrc <- a }) }()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start")
	}

	code, rb := getReady(t, addr)
	if code != 200 || rb.Status != "ok" {
		t.Fatalf("readyz = %d %+v, want 200 ok", code, rb)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, fam := range []string{"go_goroutines", "process_open_fds"} {
		if !contains(mb, fam) {
			t.Errorf("/metrics lacks %s", fam)
		}
	}

	if err := s.StopComponent(context.Background(), "replica"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := stack.Up(context.Background(), stack.Config{DataDir: s.Dir}); err != nil {
			t.Errorf("restart replica: %v", err)
		}
	})
	code, rb = getReady(t, addr)
	if code != 200 || rb.Status != "degraded" || rb.Components["replica1"].Status != "down" || rb.Components["primary"].Status != "ok" {
		t.Fatalf("readyz with replica stopped = %d %+v, want 200 degraded with replica1 down", code, rb)
	}
	// Unauthenticated: it says what kind of failure, never the driver's
	// details (user, database, host:port).
	if e := rb.Components["replica1"].Error; e == "" || strings.ContainsAny(e, ":@") || strings.Contains(e, "127.0.0.1") {
		t.Errorf("readyz replica1 error %q: want a short kind of failure without connection details", e)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after shutdown", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not shut down")
	}
}

// TestExitCodes: configuration mistakes exit 2, each case in its own
// environment (every variable the cases touch is set, to "" when unused).
func TestExitCodes(t *testing.T) {
	vars := []string{"PARLEY_PRIMARY_URL", "PARLEY_ADMIN_TOKEN", "PARLEY_MAX_REPLICA_LAG", "PARLEY_LOG_FORMAT", "PARLEY_LOG_LEVEL", "PARLEY_SEED_USERS", "PARLEY_CHAOS_CLIENTS"}
	valid := map[string]string{"PARLEY_PRIMARY_URL": "postgres://127.0.0.1:1/x", "PARLEY_ADMIN_TOKEN": "x"}
	with := func(over map[string]string) map[string]string {
		env := map[string]string{}
		for k, v := range valid {
			env[k] = v
		}
		for k, v := range over {
			env[k] = v
		}
		return env
	}
	for _, tc := range []struct {
		name string
		run  func(context.Context, []string) error
		env  map[string]string
		args []string
		want int
	}{
		{"no primary URL", runServe, with(map[string]string{"PARLEY_PRIMARY_URL": ""}), nil, 2},
		{"no admin token", runServe, with(map[string]string{"PARLEY_ADMIN_TOKEN": ""}), nil, 2},
		{"unknown flag", runServe, with(nil), []string{"--no-such-flag"}, 2},
		{"unexpected argument", runServe, with(nil), []string{"extra"}, 2},
		{"malformed duration variable", runServe, with(map[string]string{"PARLEY_MAX_REPLICA_LAG": "5"}), nil, 2},
		{"malformed log format", runServe, with(map[string]string{"PARLEY_LOG_FORMAT": "xml"}), nil, 2},
		{"malformed log level", runServe, with(map[string]string{"PARLEY_LOG_LEVEL": "loud"}), nil, 2},
		{"access log sample out of range", runServe, with(nil), []string{"--access-log-sample", "2"}, 2},
		{"malformed int variable", runSeed, with(map[string]string{"PARLEY_SEED_USERS": "many"}), nil, 2},
		{"help", runServe, with(nil), []string{"--help"}, 0},
		{"chaos: unknown scenario", runChaos, with(nil), []string{"--scenario", "replica-lag,nope"}, 2},
		{"chaos: unknown flag", runChaos, with(nil), []string{"--no-such-flag"}, 2},
		{"chaos: no clients", runChaos, with(nil), []string{"--clients", "0"}, 2},
		{"chaos: malformed clients variable", runChaos, with(map[string]string{"PARLEY_CHAOS_CLIENTS": "many"}), nil, 2},
		{"chaos: target without its stack", runChaos, with(nil), []string{"--target", "http://127.0.0.1:1"}, 2},
		{"chaos: target not a URL", runChaos, with(nil), []string{"--target", "127.0.0.1:1", "--data-dir", ".", "--admin-token", "x"}, 2},
		{"chaos: JSON into a missing directory", runChaos, with(nil), []string{"--json", "/nonexistent-dir/chaos.json"}, 2},
		{"chaos: unknown gate", runChaos, with(nil), []string{"--gate", "latency"}, 2},
		{"chaos: help", runChaos, with(nil), []string{"--help"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range vars {
				t.Setenv(k, tc.env[k])
			}
			if code := exitCode(tc.run(context.Background(), tc.args)); code != tc.want {
				t.Errorf("exit %d, want %d", code, tc.want)
			}
		})
	}
}

// TestNoSecretInOutput: --help and usage errors never print a token or a
// DSN password taken from the environment; a malformed variable's error
// names it.
func TestNoSecretInOutput(t *testing.T) {
	const token, password = "s3cret-token", "hunter2-pw"
	t.Setenv("PARLEY_ADMIN_TOKEN", token)
	t.Setenv("PARLEY_PRIMARY_URL", "postgres://parley:"+password+"@127.0.0.1:1/parley")
	t.Setenv("PARLEY_REDIS_URL", "redis://:"+password+"@127.0.0.1:1/0")
	t.Setenv("PARLEY_CURSOR_KEY", token+"00112233445566778899")
	for _, cmd := range []string{"serve", "dev", "load", "migrate", "seed", "canary"} {
		for _, args := range [][]string{{"--help"}, {"--no-such-flag"}} {
			out := runBinary(t, append([]string{cmd}, args...), nil)
			if strings.Contains(out, token) || strings.Contains(out, password) {
				t.Errorf("parley %s %v prints a secret:\n%s", cmd, args, out)
			}
			if args[0] == "--help" && !strings.Contains(out, "PARLEY_") {
				t.Errorf("parley %s --help names no variable:\n%s", cmd, out)
			}
		}
	}
	out := runBinary(t, []string{"serve"}, []string{"PARLEY_MAX_REPLICA_LAG=5"})
	if !strings.Contains(out, "PARLEY_MAX_REPLICA_LAG") || strings.Contains(out, password) {
		t.Errorf("a malformed variable's error: %s", out)
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// runBinary runs the parley binary (built once) with args and extra
// environment, and returns its combined output.
func runBinary(t *testing.T, args, env []string) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "parley-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "parley")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), env...)
	out, _ := cmd.CombinedOutput()
	return string(out)
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }
