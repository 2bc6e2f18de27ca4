package postgres

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

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

// TestCommitAt: the COMMIT and the position read after it, in one message:
// a committed transaction's position is past the write; a transaction that
// had failed is reported rolled back, not committed; a COMMIT that fails
// (a deferred constraint) is an error and commits nothing.
func TestCommitAt(t *testing.T) {
	db := migratedDB(t)
	eachMode(t, db, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		c, err := s.Pool().Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
		table := fmt.Sprintf("commit_at_%d", seq.Add(1))
		if _, err := c.Exec(ctx, `CREATE TABLE `+table+` (k int, CONSTRAINT u UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)`); err != nil {
			t.Fatal(err)
		}
		count := func() (n int) {
			t.Helper()
			if err := c.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		var text string
		if err := c.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&text); err != nil {
			t.Fatal(err)
		}
		before, _ := wal.Parse(text)
		for _, tc := range []struct {
			name    string
			stmts   []string
			wantErr error // nil: committed
			rows    int   // rows in the table afterwards
		}{
			{"committed", []string{`INSERT INTO ` + table + ` VALUES (1)`}, nil, 1},
			{"failed transaction", []string{`INSERT INTO ` + table + ` VALUES (2)`, `SELECT 1/0`}, errCommitRolledBack, 1},
			{"failing COMMIT", []string{`INSERT INTO ` + table + ` VALUES (1)`}, &pgconn.PgError{Code: "23505"}, 1},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := c.Exec(ctx, `BEGIN`); err != nil {
					t.Fatal(err)
				}
				for _, q := range tc.stmts {
					_, _ = c.Exec(ctx, q)
				}
				pos, err := commitAt(ctx, c.Conn().PgConn())
				switch want := tc.wantErr.(type) {
				case nil:
					if err != nil || pos <= before {
						t.Errorf("commitAt = %s, %v; want a position past %s", pos, err, before)
					}
				case *pgconn.PgError:
					if pgCode(err) != want.Code {
						t.Errorf("commitAt error %v, want SQLSTATE %s", err, want.Code)
					}
				default:
					if !errors.Is(err, want) {
						t.Errorf("commitAt error %v, want %v", err, want)
					}
				}
				if tx := c.Conn().PgConn().TxStatus(); tx != 'I' {
					t.Errorf("transaction status after commitAt %q, want idle", tx)
				}
				if n := count(); n != tc.rows {
					t.Errorf("%d rows after commitAt, want %d", n, tc.rows)
				}
			})
		}
		if _, err := c.Exec(ctx, `DROP TABLE `+table); err != nil {
			t.Fatal(err)
		}
	})
}
