package postgres

import (
	"fmt"
	"testing"

	"github.com/parley-chat/parley/internal/chat"
)

// TestCommitPosition: a write run with WithCommitPosition records the WAL
// insert position read on its own connection after the commit — past the
// position before the write — direct and through PgBouncer; a write without
// the holder records nothing and still works.
func TestCommitPosition(t *testing.T) {
	db := migratedDB(t)
	eachMode(t, db, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		f := fixture{t, ctx, s}
		alice, bob := f.user(), f.user()
		conv, err := s.CreateConversation(ctx, alice.ID, "", []int64{bob.ID})
		if err != nil {
			t.Fatal(err)
		}
		var before string
		if err := s.Pool().QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&before); err != nil {
			t.Fatal(err)
		}
		wctx, pos := WithCommitPosition(ctx)
		if _, err := s.SendMessage(wctx, chat.SendRequest{ConversationID: conv.ID, SenderID: alice.ID, Body: "hi"}); err != nil {
			t.Fatal(err)
		}
		if pos.LSN == "" {
			t.Fatal("no commit position recorded")
		}
		var after bool
		if err := s.Pool().QueryRow(ctx, `SELECT $1::pg_lsn > $2::pg_lsn`, pos.LSN, before).Scan(&after); err != nil {
			t.Fatal(err)
		}
		if !after {
			t.Errorf("commit position %s not past the position before the write %s", pos.LSN, before)
		}
		// One-statement writes (create user) record theirs too.
		wctx, pos2 := WithCommitPosition(ctx)
		if _, _, err := s.CreateUser(wctx, fmt.Sprintf("pos_%d", seq.Add(1)), ""); err != nil {
			t.Fatal(err)
		}
		if pos2.LSN == "" {
			t.Error("no commit position recorded for a one-statement write")
		}
	})
}
