package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/internal/dbrouter"
)

// Querier is what a read needs from a database connection: a
// *pgxpool.Pool, a *pgxpool.Conn, a *pgx.Conn or a pgx.Tx. Read methods take
// one, so the caller chooses where they run (the primary, a replica picked
// by the router, a transaction in a test).
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Store runs Parley's SQL. Writes (CreateUser, CreateConversation,
// SendMessage, MarkRead) run on the primary pool, each in one transaction or
// one statement, and return what a cache must invalidate. Reads (UserByToken,
// Conversation, Conversations, Messages, Unread) take a Querier and never
// open a transaction, so a router can run them on a replica; Read runs one on
// the primary.
//
// The store does not bound the wait for a pooled connection itself: that is
// the pool's job (dbrouter's pools bound every Acquire, Router.Primary
// included). Errors that mean the database cannot serve are classified by
// dbrouter.Classify: errors.Is(err, dbrouter.ErrUnavailable).
type Store struct {
	pool *pgxpool.Pool
}

// New returns a store whose writes go to pool: the primary, direct or
// through PgBouncer with QueryExecModeExec — in the server, the router's
// (dbrouter.Router.Primary), whose Acquire waits are bounded.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

// Pool is the primary pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// acquire takes a primary connection.
func (s *Store) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, dbrouter.Classify(ctx, fmt.Errorf("acquire primary connection: %w", err))
	}
	return c, nil
}

// TargetPrimary is the source Read reports (X-Read-Source).
const TargetPrimary = dbrouter.TargetPrimary

// Read runs fn on a primary connection and reports "primary" as where it
// ran. It is the reader of the API until a router chooses between the
// primary and replicas (dbrouter.Router.Read has the same shape); endpoint
// names the read (chat.Endpoint*) for such a router and is unused here.
func (s *Store) Read(ctx context.Context, endpoint string, fn func(ctx context.Context, q Querier) error) (string, error) {
	c, err := s.acquire(ctx)
	if err != nil {
		return TargetPrimary, err
	}
	defer c.Release()
	return TargetPrimary, dbrouter.Classify(ctx, fn(ctx, c))
}

// inTx runs fn in a transaction on a primary connection and commits.
func (s *Store) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	c, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	tx, err := c.Begin(ctx)
	if err != nil {
		return dbrouter.Classify(ctx, fmt.Errorf("begin: %w", err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return dbrouter.Classify(ctx, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return dbrouter.Classify(ctx, fmt.Errorf("commit: %w", err))
	}
	recordPosition(ctx, c)
	return nil
}

// write runs one statement outside an explicit transaction on the primary.
func (s *Store) write(ctx context.Context, fn func(q Querier) error) error {
	c, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	if err := fn(c); err != nil {
		return dbrouter.Classify(ctx, err)
	}
	recordPosition(ctx, c)
	return nil
}

// pgCode is the SQLSTATE of a PostgreSQL error in err's chain, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}
