package postgres

import (
	"context"
	"time"
)

// CommitPosition receives the primary's WAL insert position, read on the
// write's own connection right after its commit: the read-your-writes token
// of that write. Reading it there costs one round trip and no second pool
// acquire, so a saturated pool cannot leave a committed write without a
// token (a replica that has replayed up to the position has the commit).
type CommitPosition struct {
	// LSN is the position as PostgreSQL prints it ("16/B374D848"); empty
	// when it could not be read (the connection died right after commit).
	LSN string
}

type commitPositionKey struct{}

// WithCommitPosition returns a context that makes the store's next write
// record its commit position in the returned holder.
func WithCommitPosition(ctx context.Context) (context.Context, *CommitPosition) {
	p := &CommitPosition{}
	return context.WithValue(ctx, commitPositionKey{}, p), p
}

// recordPosition fills the context's CommitPosition holder, if any, from q
// (the connection that just committed). The write is committed: finish even
// when the caller has gone, within a short bound.
func recordPosition(ctx context.Context, q Querier) {
	p, _ := ctx.Value(commitPositionKey{}).(*CommitPosition)
	if p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	var lsn string
	if err := q.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err == nil {
		p.LSN = lsn
	}
}
