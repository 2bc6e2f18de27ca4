package stack

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The stack of the running test package (set by Main).
var testStack atomic.Pointer[Stack]

// Main is a test package's TestMain body: it brings up a throwaway stack (temp
// dir, random ports, fsync off) — or reuses the running stack whose data dir
// PARLEY_TEST_STACK names — runs the tests, and tears the stack down.
//
//	func TestMain(m *testing.M) { os.Exit(stack.Main(m)) }
func Main(m *testing.M) int {
	ctx := context.Background()
	var s *Stack
	if dir := os.Getenv("PARLEY_TEST_STACK"); dir != "" {
		var err error
		if s, err = Open(dir); err != nil {
			fmt.Fprintf(os.Stderr, "PARLEY_TEST_STACK=%s: %v\n", dir, err)
			return 1
		}
		testStack.Store(s)
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "parley-test-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "test stack: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// MkdirTemp makes 0700; the daemon user must be able to enter it.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "test stack: %v\n", err)
		return 1
	}
	s, err = Up(ctx, Config{DataDir: dir, Fast: true, PoolSize: 10, Log: os.Stderr})
	if err != nil {
		fmt.Fprintf(os.Stderr, "test stack: %v\n", err)
		if s == nil {
			if s2, oerr := Open(dir); oerr == nil {
				_ = s2.Down(ctx)
			}
		}
		return 1
	}
	testStack.Store(s)
	code := m.Run()
	if err := s.Down(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "test stack down: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// ForTest returns the test package's stack; the package's TestMain must call Main.
func ForTest(tb testing.TB) *Stack {
	tb.Helper()
	s := testStack.Load()
	if s == nil {
		tb.Fatal("no test stack: add `func TestMain(m *testing.M) { os.Exit(stack.Main(m)) }` to this package")
	}
	return s
}

var dbSeq atomic.Int64

// Database is a fresh, empty database for one test, on the primary (and so on
// the replica, once replayed), owned by the app role.
type Database struct {
	Name         string
	PrimaryURL   string // direct to the primary
	ReplicaURL   string // direct to the replica
	PgBouncerURL string // through PgBouncer (transaction pooling, exec mode)
}

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDatabase creates a database named after the test, dropped in Cleanup.
// It waits until the replica has it too.
func (s *Stack) NewDatabase(tb testing.TB) Database {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	name := nonIdent.ReplaceAllString(strings.ToLower(tb.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("t_%s_%d_%d", name, os.Getpid(), dbSeq.Add(1))
	conn, err := connectRetry(ctx, s.SuperuserURL("postgres"), 10*time.Second)
	if err != nil {
		tb.Fatalf("test database: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s OWNER %s`, name, AppRole)); err != nil {
		tb.Fatalf("create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := connectRetry(ctx, s.SuperuserURL("postgres"), 10*time.Second)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, name))
	})
	if err := s.grantDatabase(ctx, name); err != nil {
		tb.Fatalf("test database: %v", err)
	}
	db := Database{Name: name, PrimaryURL: s.PrimaryURLFor(name), ReplicaURL: s.ReplicaURLFor(name), PgBouncerURL: s.PgBouncerURLFor(name)}
	if err := WaitReplicaCaughtUp(ctx, s.PrimaryURLFor(name), s.ReplicaURLFor(name)); err != nil {
		tb.Fatalf("test database on replica: %v", err)
	}
	return db
}

// WaitReplicaCaughtUp waits until the replica has replayed everything the
// primary had written when it was called.
func WaitReplicaCaughtUp(ctx context.Context, primaryURL, replicaURL string) error {
	p, err := connectRetry(ctx, primaryURL, 10*time.Second)
	if err != nil {
		return err
	}
	defer p.Close(context.Background())
	var lsn string
	if err := p.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
		return err
	}
	r, err := connectRetry(ctx, replicaURL, 30*time.Second)
	if err != nil {
		return err
	}
	defer r.Close(context.Background())
	for {
		var ok bool
		if err := r.QueryRow(ctx, `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn`, lsn).Scan(&ok); err != nil {
			return err
		}
		if ok {
			return nil
		}
		if err := ctxSleep(ctx, 10*time.Millisecond); err != nil {
			return fmt.Errorf("replica did not replay %s: %w", lsn, err)
		}
	}
}

// Exec runs one statement as the superuser in database db on the primary
// (for tests that need privileges the app role lacks).
func (s *Stack) Exec(ctx context.Context, db, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, s.SuperuserURL(db))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}
