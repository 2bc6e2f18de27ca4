package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/parley-chat/parley/internal/wal"
)

// commitPosition is the primary's WAL insert position read on q, the
// connection that just committed: the read-your-writes token of that write
// (a replica that has replayed up to it has the commit). Reading it there
// costs one round trip and no second pool acquire, so a saturated pool
// cannot leave a committed write without a position. It is 0 when it could
// not be read (the connection died right after the commit); the write is
// committed all the same. It finishes even when the caller has gone, within
// ctx's deadline and at most 300 ms: behind PgBouncer the statement after a
// COMMIT needs a server connection again, and a full pool must not hold a
// committed write for long (its token is then read anew, or unknown). The
// value is raw: at a WAL page boundary it points past the page header
// (dbrouter.Router.NormalizeCommitLSN makes it a token).
func commitPosition(ctx context.Context, q Querier) wal.LSN {
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(context.WithoutCancel(ctx), d)
		defer cancel()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 300*time.Millisecond)
	defer cancel()
	var s string
	if err := q.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&s); err != nil {
		return 0
	}
	l, err := wal.Parse(s)
	if err != nil {
		return 0
	}
	return l
}

// commitAtSQL commits the open transaction and reads the WAL insert position
// after it, in one simple-protocol message: one round trip, and behind
// PgBouncer's transaction pooling one server connection (the message ends
// with a single ReadyForQuery, so the SELECT runs on the server connection
// that committed). Read after the COMMIT a second time instead, the position
// needs a server connection again, and a pool held by other work (parley
// chaos pool-exhaustion) left committed sends without a position: their
// users' reads were then held to the primary, which that pool could not
// serve either.
const commitAtSQL = `COMMIT; SELECT pg_current_wal_insert_lsn()::text`

// errCommitRolledBack: COMMIT of a transaction that had failed (PostgreSQL
// rolls it back and answers ROLLBACK).
var errCommitRolledBack = errors.New("the transaction was rolled back (it had failed)")

// commitAt commits the transaction open on c and returns the primary's WAL
// insert position read right after the COMMIT (see commitPosition; raw, not
// normalized). An error means the outcome of the COMMIT is unknown or that
// it failed; a position that could not be read after a successful COMMIT is
// 0 with a nil error (the write is committed all the same).
func commitAt(ctx context.Context, c *pgconn.PgConn) (wal.LSN, error) {
	res, err := c.Exec(ctx, commitAtSQL).ReadAll()
	switch {
	case len(res) > 0 && res[0].Err != nil:
		return 0, res[0].Err // the COMMIT failed
	case len(res) == 0 && err == nil:
		return 0, errors.New("no answer to COMMIT")
	case len(res) == 0:
		return 0, err // its outcome is unknown
	}
	if tag := res[0].CommandTag.String(); tag != "COMMIT" {
		return 0, fmt.Errorf("%w: %s", errCommitRolledBack, tag)
	}
	if err != nil || len(res) < 2 || res[1].Err != nil || len(res[1].Rows) != 1 || len(res[1].Rows[0]) != 1 {
		return 0, nil // committed; the position is unknown
	}
	l, perr := wal.Parse(string(res[1].Rows[0][0]))
	if perr != nil {
		return 0, nil
	}
	return l, nil
}
