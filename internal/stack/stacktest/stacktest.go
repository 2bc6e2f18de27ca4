// Package stacktest is Parley's test support, in one place: the real local
// stack as a test fixture (a throwaway stack per test package, a database
// per test, cloned from a prepared template when the package gives one),
// and the helpers the test packages share — waiting for a condition,
// pausing replay on the replica, reading metrics, and an HTTP client of the
// API. Only tests import it: the production binary does not link "testing".
//
//	func TestMain(m *testing.M) { os.Exit(stacktest.Main(m)) }
//
// A package that needs the larger shape says so (test/scale):
//
//	stacktest.Main(m, stacktest.Shape{Replicas: 2, Redis: stack.RedisCluster})
//
//	func TestX(t *testing.T) {
//		s := stacktest.ForTest(t)
//		db := s.NewDatabase(t)
//		…
//	}
package stacktest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/internal/stack"
)

// Stack is the test package's stack.
type Stack struct {
	*stack.Stack
	tmpl  *template
	shape Shape
	// shapeErr is a malformed PARLEY_TEST_SHAPE (ShapeFromEnv).
	shapeErr error
}

// Database is a fresh database for one test, on the primary (and so on
// every replica, once replayed), owned by the app role.
type Database struct {
	Name        string
	PrimaryURL  string   // direct to the primary
	ReplicaURL  string   // direct to the first replica
	ReplicaURLs []string // direct to every replica, in order (ReplicaURLs[0] == ReplicaURL)
	// PgBouncerURL goes through PgBouncer (transaction pooling, exec mode).
	PgBouncerURL string
}

// Option configures Main: Template, Migrated, a Shape, ShapeFromEnv.
type Option interface{ apply(*Stack) }

type optionFunc func(*Stack)

func (f optionFunc) apply(s *Stack) { f(s) }

// Shape is the topology a test package needs; the zero value is the
// default stack (one replica, a single Redis). As an Option of Main it
// brings up that shape.
type Shape struct {
	Replicas int    // streaming replicas (0: 1)
	Redis    string // stack.RedisSingle ("" too) or stack.RedisCluster
}

func (sh Shape) apply(s *Stack) { s.shape = sh }

func (sh Shape) normal() Shape {
	if sh.Replicas == 0 {
		sh.Replicas = 1
	}
	if sh.Redis == "" {
		sh.Redis = stack.RedisSingle
	}
	return sh
}

func (sh Shape) String() string {
	sh = sh.normal()
	return fmt.Sprintf("replicas=%d,redis=%s", sh.Replicas, sh.Redis)
}

// ParseShape parses "replicas=2,redis=cluster" (either part may be left
// out; "" is the default shape).
func ParseShape(text string) (Shape, error) {
	var sh Shape
	for _, part := range strings.Split(text, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "replicas":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > stack.MaxReplicas {
				return Shape{}, fmt.Errorf("shape %q: replicas=%q: want 1 to %d", text, v, stack.MaxReplicas)
			}
			sh.Replicas = n
		case "redis":
			if v != stack.RedisSingle && v != stack.RedisCluster {
				return Shape{}, fmt.Errorf("shape %q: redis=%q: want %s or %s", text, v, stack.RedisSingle, stack.RedisCluster)
			}
			sh.Redis = v
		default:
			return Shape{}, fmt.Errorf("shape %q: unknown part %q (want replicas=N and redis=single|cluster)", text, part)
		}
	}
	return sh, nil
}

// ShapeFromEnv brings up the shape PARLEY_TEST_SHAPE names (ParseShape's
// form), the default stack when it is unset. Packages whose tests hold on
// any shape take it (test/integration), so that `make test-scale` runs them
// on the larger one.
func ShapeFromEnv() Option {
	return optionFunc(func(s *Stack) {
		s.shape, s.shapeErr = ParseShape(os.Getenv("PARLEY_TEST_SHAPE"))
	})
}

// Shape is the topology the package's stack has.
func (s *Stack) Shape() Shape {
	return Shape{Replicas: s.Replicas(), Redis: s.State.RedisMode}
}

// Template makes every NewDatabase a copy of a database prepared once per
// stack by prepare (given the template's direct primary URL), for example
// the schema migrations: copying is cheaper than migrating each time. name
// must change whenever what prepare does changes (e.g. the schema version):
// a stack reused across runs (PARLEY_TEST_STACK) keeps its templates.
func Template(name string, prepare func(ctx context.Context, url string) error) Option {
	return optionFunc(func(s *Stack) { s.tmpl = &template{name: name, prepare: prepare} })
}

// Migrated is Template with a schema migration: name identifies the schema
// (e.g. postgres.SchemaFingerprint()), migrate applies it on a pool of the
// template (postgres.Migrate).
func Migrated(name string, migrate func(context.Context, *pgxpool.Pool, *slog.Logger) ([]int, error)) Option {
	return Template("schema "+name, func(ctx context.Context, url string) error {
		cfg, err := pgxpool.ParseConfig(url)
		if err != nil {
			return err
		}
		cfg.MaxConns = 2
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return err
		}
		defer pool.Close()
		_, err = migrate(ctx, pool, nil)
		return err
	})
}

type template struct {
	name    string
	prepare func(ctx context.Context, url string) error
	once    sync.Once
	db      string // the template database, once made
	err     error
}

// The stack of the running test package (set by Main).
var testStack atomic.Pointer[Stack]

// Main is a test package's TestMain body: it brings up a throwaway stack (temp
// dir, random ports, fsync off) of the package's Shape — or reuses the
// running stack whose data dir PARLEY_TEST_STACK names, which must have
// that shape — runs the tests, and tears the stack down.
func Main(m *testing.M, opts ...Option) int {
	ctx := context.Background()
	ts := &Stack{}
	for _, o := range opts {
		o.apply(ts)
	}
	if ts.shapeErr != nil {
		fmt.Fprintf(os.Stderr, "PARLEY_TEST_SHAPE: %v\n", ts.shapeErr)
		return 2
	}
	want := ts.shape.normal()
	if dir := os.Getenv("PARLEY_TEST_STACK"); dir != "" {
		s, err := stack.Open(dir)
		if err != nil {
			fmt.Fprintf(os.Stderr, "PARLEY_TEST_STACK=%s: %v\n", dir, err)
			return 1
		}
		if have := (Shape{Replicas: s.Replicas(), Redis: s.State.RedisMode}); have.normal() != want {
			fmt.Fprintf(os.Stderr, "PARLEY_TEST_STACK=%s has the shape %s; this package needs %s: parley stack up --data-dir %s --replicas %d --redis %s\n",
				dir, have, want, dir, want.Replicas, want.Redis)
			return 1
		}
		ts.Stack = s
		testStack.Store(ts)
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
	s, err := stack.Up(ctx, stack.Config{DataDir: dir, Fast: true, PoolSize: 10, Log: os.Stderr,
		Replicas: want.Replicas, Redis: want.Redis})
	if err != nil {
		fmt.Fprintf(os.Stderr, "test stack: %v\n", err)
		if s == nil {
			if s2, oerr := stack.Open(dir); oerr == nil {
				_ = s2.Down(ctx)
			}
		}
		return 1
	}
	ts.Stack = s
	testStack.Store(ts)
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
		tb.Fatal("no test stack: add `func TestMain(m *testing.M) { os.Exit(stacktest.Main(m)) }` to this package")
		return nil
	}
	return s
}

var (
	dbSeq    atomic.Int64
	nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)
)

// NewDatabase creates a database named after the test, dropped in Cleanup:
// a copy of the package's Template when it has one, else empty. It waits
// until every replica has it too.
func (s *Stack) NewDatabase(tb testing.TB) Database {
	tb.Helper()
	tmpl := ""
	if s.tmpl != nil {
		var err error
		if tmpl, err = s.template(); err != nil {
			tb.Fatalf("template database: %v", err)
		}
	}
	return s.newDatabase(tb, tmpl)
}

// NewEmptyDatabase creates an empty database (no template), dropped in
// Cleanup, for tests of what a template would have done (migrations).
func (s *Stack) NewEmptyDatabase(tb testing.TB) Database {
	tb.Helper()
	return s.newDatabase(tb, "")
}

func (s *Stack) newDatabase(tb testing.TB, tmpl string) Database {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	name := nonIdent.ReplaceAllString(strings.ToLower(tb.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("t_%s_%d_%d", name, os.Getpid(), dbSeq.Add(1))
	if err := s.CreateDatabase(ctx, name, tmpl); err != nil {
		tb.Fatalf("test database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = s.DropDatabase(ctx, name)
	})
	return s.database(name)
}

func (s *Stack) database(name string) Database {
	return Database{Name: name, PrimaryURL: s.PrimaryURLFor(name), ReplicaURL: s.ReplicaURLFor(name),
		ReplicaURLs: s.ReplicaURLsFor(name), PgBouncerURL: s.PgBouncerURLFor(name)}
}

// template makes the package's template database once per stack and
// returns its name. Concurrent test binaries sharing a stack serialise on an
// advisory lock, so it is made once.
func (s *Stack) template() (string, error) {
	t := s.tmpl
	t.once.Do(func() {
		sum := sha256.Sum256([]byte(t.name))
		t.db = "tmpl_" + nonIdent.ReplaceAllString(strings.ToLower(t.name), "_")
		if len(t.db) > 40 {
			t.db = t.db[:40]
		}
		t.db += "_" + hex.EncodeToString(sum[:4])
		t.err = s.makeTemplate(t)
	})
	return t.db, t.err
}

func (s *Stack) makeTemplate(t *template) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.SuperuserURL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext($1))`, t.db); err != nil {
		return err
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock(hashtext($1))`, t.db) //nolint:errcheck
	if ok, err := s.DatabaseExists(ctx, t.db); err != nil || ok {
		return err
	}
	// Prepared under a temporary name and renamed when complete, so that a
	// crash half-way leaves no template that looks finished.
	building := t.db + "_new"
	if err := s.DropDatabase(ctx, building); err != nil {
		return err
	}
	if err := s.CreateDatabase(ctx, building, ""); err != nil {
		return err
	}
	if err := t.prepare(ctx, s.PrimaryURLFor(building)); err != nil {
		_ = s.DropDatabase(ctx, building)
		return fmt.Errorf("prepare %s: %w", t.name, err)
	}
	// No session may be connected to a template while it is copied.
	if _, err := conn.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %s RENAME TO %s`, building, t.db)); err != nil {
		return err
	}
	return nil
}
