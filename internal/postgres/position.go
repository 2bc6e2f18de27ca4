package postgres

import (
	"context"
	"time"

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
