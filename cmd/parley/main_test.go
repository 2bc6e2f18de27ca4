package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/stack"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

func TestMain(m *testing.M) {
	os.Exit(stacktest.Main(m, stacktest.Migrated(postgres.SchemaFingerprint(), postgres.Migrate)))
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
	cfg := serveConfig{
		HTTPAddr: "127.0.0.1:0", PrimaryURL: db.PgBouncerURL, PrimaryExecMode: "exec",
		ReplicaURLs: []string{db.ReplicaURL}, ReplicaExecMode: "cache_statement",
		RedisURL: s.RedisURL(), AdminToken: "test-admin", ShutdownTimeout: 5 * time.Second,
	}
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

func TestServeRequiresConfig(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		args []string
	}{
		{env: map[string]string{"PARLEY_PRIMARY_URL": "", "PARLEY_ADMIN_TOKEN": "x"}},
		{env: map[string]string{"PARLEY_PRIMARY_URL": "postgres://127.0.0.1:1/x", "PARLEY_ADMIN_TOKEN": ""}},
		{args: []string{"--no-such-flag"}},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		if code := exitCode(runServe(context.Background(), tc.args)); code != 2 {
			t.Errorf("serve %v with %v: exit %d, want 2", tc.args, tc.env, code)
		}
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }
