package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/internal/wal"
)

// Querier is what SQL runs on: a *pgxpool.Pool, a *pgxpool.Conn, a *pgx.Conn
// or a pgx.Tx. Read methods take one, so the caller chooses where they run
// (the primary, a replica picked by the router, a transaction in a test).
// It is Parley's one Querier: the router hands its reads one too.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

var (
	_ Querier = (*pgxpool.Pool)(nil)
	_ Querier = (*pgxpool.Conn)(nil)
	_ Querier = (*pgx.Conn)(nil)
	_ Querier = (pgx.Tx)(nil)
)

// Store runs Parley's SQL. Writes (CreateUser, CreateConversation,
// SendMessage, MarkRead) run on the primary pool, each in one transaction or
// one statement, and return what a cache must invalidate and the write's
// commit position. Reads (UserByToken, Conversation, Conversations, Messages,
// Unread, MemberIDs) take a Querier and never open a transaction, so a router
// can run them on a replica.
//
// The store does not bound the wait for a pooled connection itself: that is
// the pool's job (the router's pools bound every Acquire). Errors that mean
// the database cannot serve are classified by Classify:
// errors.Is(err, ErrUnavailable).
type Store struct {
	pool *pgxpool.Pool
}

// New returns a store whose writes go to pool: the primary, direct or
// through PgBouncer with QueryExecModeExec — in the server, the router's
// primary pool, whose Acquire waits are bounded.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

// Pool is the primary pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// acquire takes a primary connection.
func (s *Store) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, Classify(ctx, fmt.Errorf("acquire primary connection: %w", err))
	}
	return c, nil
}

// inTx runs fn in a transaction on a primary connection, commits, and
// returns the commit position (commitAt).
func (s *Store) inTx(ctx context.Context, fn func(tx pgx.Tx) error) (wal.LSN, error) {
	c, tx, err := s.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	if err := fn(tx); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return 0, Classify(ctx, err)
	}
	// The transaction is ended by commitAt, not by tx: tx must not be
	// used (nor rolled back) after it.
	pos, err := commitAt(ctx, c.Conn().PgConn())
	if err != nil {
		return 0, Classify(ctx, commitUnknown(fmt.Errorf("commit: %w", err)))
	}
	return pos, nil
}

// begin acquires a primary connection and opens a transaction on it. A
// BEGIN that fails with a connection error (a pooled connection that died
// with PgBouncer or the primary) changed nothing: it is tried again on a new
// connection, twice at most.
func (s *Store) begin(ctx context.Context) (*pgxpool.Conn, pgx.Tx, error) {
	for attempt := 0; ; attempt++ {
		c, err := s.acquire(ctx)
		if err != nil {
			return nil, nil, err
		}
		tx, err := c.Begin(ctx)
		if err == nil {
			return c, tx, nil
		}
		c.Release()
		if attempt == 2 || !IsConnectionError(err) || ctx.Err() != nil {
			return nil, nil, Classify(ctx, fmt.Errorf("begin: %w", err))
		}
	}
}

// write runs one statement outside an explicit transaction on the primary
// and returns its commit position (commitPosition).
func (s *Store) write(ctx context.Context, fn func(q Querier) error) (wal.LSN, error) {
	c, err := s.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	if err := fn(c); err != nil {
		return 0, Classify(ctx, commitUnknown(err))
	}
	return commitPosition(ctx, c), nil
}

// pgCode is the SQLSTATE of a PostgreSQL error in err's chain, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}
