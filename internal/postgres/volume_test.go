package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// volume describes the data set seedVolume makes: realistic sizes and skew
// for plans (the planner chooses differently on empty tables).
type volume struct {
	users, convs, messages int
	hotConv                int64 // the conversation with the longest history
	hotConvMember          int64 // a member of it
	hotUser                int64 // the user with the most memberships
	hotUserConvs           int   // how many
}

// seedVolume fills a fresh, migrated database with 2 000 users, 10 000
// conversations (80% DMs, the rest groups of 3–17) and 130 000 messages —
// a sixth in conversation 1 (21k deep), the rest skewed towards low
// conversation ids (power(random(), 3)) — interleaved on the heap as real
// traffic would be; user 1 is in 200 conversations. Then it
// sets last_message_*, seqs and read markers as sends would have, and runs
// VACUUM (ANALYZE) so that statistics and the visibility map are fresh.
func seedVolume(t testing.TB, ctx context.Context, db stacktest.Database, s *Store) volume {
	t.Helper()
	start := time.Now()
	v := volume{users: 2000, convs: 10000, messages: 130000, hotConv: 1, hotUser: 1}
	// Everything is inserted in its final state (no UPDATE), so the tables
	// hold no dead tuples: the replica's hot_standby_feedback would keep
	// VACUUM from removing them right away and blur the buffer counts.
	stmts := []string{
		`SELECT setseed(0.42)`,
		`INSERT INTO users (handle, display_name, token_hash)
		 SELECT 'v' || g, 'Volume ' || g, sha256(('token' || g)::bytea) FROM generate_series(1, 2000) g`,
		// Memberships: the creator and one other; user 1 in every 50th;
		// groups (8001–10000) have 1–15 more members.
		`CREATE TEMP TABLE seed_cm AS
		 SELECT DISTINCT g AS conversation_id, u AS user_id FROM (
		   SELECT g, u FROM generate_series(1, 10000) g,
		          LATERAL (VALUES (1 + (g * 7) % 2000), (1 + (g * 13 + 5) % 2000), (CASE WHEN g % 50 = 0 OR g = 1 THEN 1 END)) x(u)
		   UNION ALL
		   SELECT g, 1 + (g * 31 + k * 17) % 2000 FROM generate_series(8001, 10000) g, generate_series(1, 1 + g % 15) k) x
		 WHERE u IS NOT NULL`,
		`CREATE TEMP TABLE seed_members AS
		 SELECT conversation_id, array_agg(user_id ORDER BY user_id) AS m FROM seed_cm GROUP BY 1`,
		// Messages: a sixth in conversation 1, the rest skewed to low ids,
		// interleaved in time (g), ids = g.
		`CREATE TEMP TABLE seed_msg AS
		 SELECT g, conv, now() - interval '30 days' + g * interval '10 ms' AS at,
		        row_number() OVER (PARTITION BY conv ORDER BY g) AS seq
		 FROM (SELECT g, CASE WHEN g % 6 = 0 THEN 1 ELSE 2 + floor(9999 * power(random(), 3))::bigint END AS conv
		       FROM generate_series(1, 130000) g) x`,
		`CREATE TEMP TABLE seed_last AS
		 SELECT DISTINCT ON (conv) conv, g, at, seq FROM seed_msg ORDER BY conv, seq DESC`,
		`INSERT INTO conversations (id, created_by, created_at, title, last_message_id, last_message_at, last_seq)
		 OVERRIDING SYSTEM VALUE
		 SELECT c, 1 + (c * 7) % 2000, now() - interval '120 days' + c * interval '1 minute',
		        CASE WHEN c > 8000 THEN 'group ' || c ELSE '' END, l.g, l.at, coalesce(l.seq, 0)
		 FROM generate_series(1, 10000) c LEFT JOIN seed_last l ON l.conv = c`,
		`SELECT setval(pg_get_serial_sequence('conversations', 'id'), 10000)`,
		// Most members are nearly caught up; some are far behind.
		`INSERT INTO conversation_members (conversation_id, user_id, last_read_seq)
		 SELECT cm.conversation_id, cm.user_id, greatest(0, coalesce(l.seq, 0) - (cm.user_id * 7 + cm.conversation_id) % 40)
		 FROM seed_cm cm LEFT JOIN seed_last l ON l.conv = cm.conversation_id`,
		`INSERT INTO messages (id, conversation_id, sender_id, created_at, seq, body)
		 OVERRIDING SYSTEM VALUE
		 SELECT s.g, s.conv, sm.m[1 + s.g % cardinality(sm.m)], s.at, s.seq,
		        'message ' || s.g || ' ' || repeat('lorem ipsum ', 1 + s.g % 12)
		 FROM seed_msg s JOIN seed_members sm ON sm.conversation_id = s.conv
		 ORDER BY s.g`,
		`SELECT setval(pg_get_serial_sequence('messages', 'id'), 130000)`,
		`DROP TABLE seed_cm, seed_members, seed_msg, seed_last`,
	}
	// As the superuser, with foreign-key triggers off for the bulk insert
	// (session_replication_role = replica): the generated rows are
	// consistent by construction, and the checks would triple the time.
	conn, err := pgx.Connect(ctx, stacktest.ForTest(t).SuperuserURL(db.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `SET session_replication_role = replica`); err != nil {
		t.Fatal(err)
	}
	for _, q := range stmts {
		t0 := time.Now()
		if _, err := conn.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("seed: %v\n%s", err, q)
		}
		if testing.Verbose() {
			t.Logf("%v: %.60s", time.Since(t0).Round(time.Millisecond), strings.Join(strings.Fields(q), " "))
		}
	}
	t0 := time.Now()
	if err := s.Analyze(ctx); err != nil {
		t.Fatalf("vacuum analyze: %v", err)
	}
	if testing.Verbose() {
		t.Logf("%v: VACUUM (ANALYZE)", time.Since(t0).Round(time.Millisecond))
	}
	if err := conn.QueryRow(ctx, `SELECT min(user_id) FROM conversation_members WHERE conversation_id = 1`).Scan(&v.hotConvMember); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM conversation_members WHERE user_id = 1`).Scan(&v.hotUserConvs); err != nil {
		t.Fatal(err)
	}
	t.Logf("seeded %d messages, %d conversations, %d users in %v (user 1 in %d conversations)",
		v.messages, v.convs, v.users, time.Since(start).Round(time.Millisecond), v.hotUserConvs)
	return v
}

// messageAtDepth is the message depth places back from the newest in conv.
func messageAtDepth(t testing.TB, ctx context.Context, q Querier, conv int64, depth int) chat.Message {
	t.Helper()
	m := chat.Message{ConversationID: conv}
	if err := q.QueryRow(ctx, `
		SELECT id, created_at FROM messages WHERE conversation_id = $1
		ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1`, conv, depth).Scan(&m.ID, &m.CreatedAt); err != nil {
		t.Fatal(err)
	}
	return m
}
