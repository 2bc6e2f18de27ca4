package postgres

import (
	"fmt"
	"testing"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/wal"
)

// TestCommitPosition: a write returns the WAL insert position read on its
// own connection after the commit — past the position before the write —
// direct and through PgBouncer, for transactions and one-statement writes.
func TestCommitPosition(t *testing.T) {
	db := migratedDB(t)
	eachMode(t, db, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		f := fixture{t, ctx, s}
		alice, bob := f.user(), f.user()
		conv, _, err := s.CreateConversation(ctx, alice.ID, "", []int64{bob.ID})
		if err != nil {
			t.Fatal(err)
		}
		var text string
		if err := s.Pool().QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&text); err != nil {
			t.Fatal(err)
		}
		before, err := wal.Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		_, pos, err := s.SendMessage(ctx, chat.SendRequest{ConversationID: conv.ID, SenderID: alice.ID, Body: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		if pos == 0 {
			t.Fatal("no commit position returned")
		}
		if pos <= before {
			t.Errorf("commit position %s not past the position before the write %s", pos, before)
		}
		// One-statement writes (create user, mark read) return theirs too.
		_, _, pos2, err := s.CreateUser(ctx, fmt.Sprintf("pos_%d", seq.Add(1)), "")
		if err != nil {
			t.Fatal(err)
		}
		if pos2 <= pos {
			t.Errorf("create user: commit position %s, not past the send's %s", pos2, pos)
		}
	})
}
