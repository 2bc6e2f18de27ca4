package postgres

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

func TestMain(m *testing.M) {
	os.Exit(stacktest.Main(m, stacktest.Migrated(SchemaFingerprint(), Migrate)))
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// connect opens a pool on url with exec mode, closed in Cleanup.
func connect(t testing.TB, url string, mode pgx.QueryExecMode, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = mode
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// migratedDB is a fresh, migrated database for the test.
// emptyMigratedDB is a database migrated from empty (not a copy of the
// package's template).
func emptyMigratedDB(t testing.TB) stacktest.Database {
	t.Helper()
	return migrate(t, stacktest.ForTest(t).NewEmptyDatabase(t))
}

// migratedDB is a migrated database: a copy of the package's template,
// migrated again (a no-op that checks Migrate is idempotent).
func migratedDB(t testing.TB) stacktest.Database {
	t.Helper()
	return migrate(t, stacktest.ForTest(t).NewDatabase(t))
}

func migrate(t testing.TB, db stacktest.Database) stacktest.Database {
	t.Helper()
	pool := connect(t, db.PrimaryURL, pgx.QueryExecModeExec, 2)
	if _, err := Migrate(testCtx(t), pool, nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	pool.Close()
	return db
}

// mode is one way of reaching the primary: the store's tests run under both.
type mode struct {
	name string
	url  func(stacktest.Database) string
	exec pgx.QueryExecMode
}

var modes = []mode{
	{"direct", func(db stacktest.Database) string { return db.PrimaryURL }, pgx.QueryExecModeCacheStatement},
	{"pgbouncer", func(db stacktest.Database) string { return db.PgBouncerURL }, pgx.QueryExecModeExec},
}

// eachMode runs fn once directly against the primary (prepared statements)
// and once through PgBouncer (exec mode), on the same database.
func eachMode(t *testing.T, db stacktest.Database, fn func(t *testing.T, s *Store)) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			fn(t, New(connect(t, m.url(db), m.exec, 20)))
		})
	}
}

var seq atomic.Int64

// fixture creates users and conversations for a test through the store.
type fixture struct {
	t   testing.TB
	ctx context.Context
	s   *Store
}

func (f fixture) user() chat.User {
	f.t.Helper()
	n := seq.Add(1)
	u, _, _, err := f.s.CreateUser(f.ctx, fmt.Sprintf("u%d_%d", n, time.Now().UnixNano()%1e6), "")
	if err != nil {
		f.t.Fatalf("create user: %v", err)
	}
	return u
}

func (f fixture) conversation(creator chat.User, others ...chat.User) chat.Conversation {
	f.t.Helper()
	ids := make([]int64, len(others))
	for i, u := range others {
		ids[i] = u.ID
	}
	c, _, err := f.s.CreateConversation(f.ctx, creator.ID, "", ids)
	if err != nil {
		f.t.Fatalf("create conversation: %v", err)
	}
	return c
}

func (f fixture) send(conv chat.Conversation, from chat.User, body string) chat.Message {
	f.t.Helper()
	r, _, err := f.s.SendMessage(f.ctx, chat.SendRequest{ConversationID: conv.ID, SenderID: from.ID, Body: body})
	if err != nil {
		f.t.Fatalf("send: %v", err)
	}
	return r.Message
}

func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	if chat.ErrorCode(err) != code {
		t.Fatalf("err = %v, want code %s", err, code)
	}
}
