package seed

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestSeed: a small data set through PgBouncer is consistent (seqs, last
// messages, read markers), skewed, its example token works, and a second
// run with the same prefix says it was seeded already.
func TestSeed(t *testing.T) {
	s := stacktest.ForTest(t)
	db := s.NewDatabase(t) // migrated
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(db.PgBouncerURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec // PgBouncer, transaction pooling
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := postgres.New(pool)
	tokens := filepath.Join(t.TempDir(), "tokens.tsv")
	var out bytes.Buffer
	res, err := Run(ctx, store, Config{Users: 60, Messages: 6000, HandlePrefix: "seedt", TokensOut: tokens, Seed: 7, Out: &out})
	if err != nil {
		t.Fatalf("seed: %v\n%s", err, out.String())
	}
	if res.Messages != 6000 || res.Conversations != 180 || !strings.Contains(out.String(), "messages") {
		t.Fatalf("result %+v\n%s", res, out.String())
	}
	var bad int
	if err := pool.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM conversations c WHERE c.last_seq <> (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id))
		     + (SELECT count(*) FROM conversations c JOIN messages m ON m.id = c.last_message_id
		        WHERE m.conversation_id <> c.id OR m.created_at <> c.last_message_at OR m.seq <> c.last_seq)
		     + (SELECT count(*) FROM conversation_members cm JOIN conversations c ON c.id = cm.conversation_id WHERE cm.last_read_seq > c.last_seq)
		     + (SELECT count(*) FROM messages m WHERE m.created_at >= now()
		        OR NOT EXISTS (SELECT 1 FROM conversation_members cm WHERE cm.conversation_id = m.conversation_id AND cm.user_id = m.sender_id))
		     + (SELECT count(*) FROM conversations c JOIN messages m ON m.conversation_id = c.id AND m.seq = 1 WHERE c.created_at > m.created_at)`).Scan(&bad); err != nil {
		t.Fatal(err)
	}
	if bad != 0 {
		t.Fatalf("%d inconsistencies in the seeded data", bad)
	}
	var top, median float64
	if err := pool.QueryRow(ctx, `
		SELECT max(last_seq), percentile_cont(0.5) WITHIN GROUP (ORDER BY last_seq) FROM conversations`).Scan(&top, &median); err != nil {
		t.Fatal(err)
	}
	if top < 10*median {
		t.Fatalf("no skew: the longest history has %v messages, the median %v", top, median)
	}
	u, err := store.UserByToken(ctx, pool, res.ExampleToken)
	if err != nil || u.ID != res.ExampleUser.ID {
		t.Fatalf("example token: %+v, %v", u, err)
	}
	if _, err := store.Conversation(ctx, pool, u.ID, res.ExampleConv); err != nil {
		t.Fatalf("example conversation: %v", err)
	}
	b, err := os.ReadFile(tokens)
	if err != nil || strings.Count(string(b), "\n") != 60 || !strings.Contains(string(b), res.ExampleToken) {
		t.Fatalf("tokens file: %v\n%.200s", err, b)
	}
	var ex bytes.Buffer
	res.PrintExample(&ex, "127.0.0.1:8080")
	if !strings.Contains(ex.String(), "Authorization: Bearer $TOKEN") || !strings.Contains(ex.String(), res.ExampleToken) {
		t.Fatalf("example:\n%s", ex.String())
	}

	_, err = Run(ctx, store, Config{Users: 10, Messages: 10, HandlePrefix: "seedt", Seed: 7})
	if !errors.Is(err, ErrAlreadySeeded) {
		t.Fatalf("second seed: %v, want ErrAlreadySeeded", err)
	}
}

func TestMain(m *testing.M) {
	os.Exit(stacktest.Main(m, stacktest.Migrated(postgres.SchemaFingerprint(), postgres.Migrate)))
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		ok   bool
	}{
		{"default", Config{Users: 1000, Messages: 200000, HandlePrefix: "demo"}, true},
		{"one user", Config{Users: 1, HandlePrefix: "demo"}, false},
		{"negative messages", Config{Users: 2, Messages: -1, HandlePrefix: "demo"}, false},
		{"negative conversations", Config{Users: 2, Conversations: -1, HandlePrefix: "demo"}, false},
		{"bad prefix", Config{Users: 2, HandlePrefix: "Demo User"}, false},
		{"prefix too long", Config{Users: 2, HandlePrefix: strings.Repeat("d", 30)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.c.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok %v", err, tc.ok)
			}
		})
	}
}
