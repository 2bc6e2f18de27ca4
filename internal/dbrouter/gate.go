package dbrouter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/wal"
)

// A read held to a token no replica's last probe has reached (the probes
// are ProbeInterval apart, a write is usually replayed within milliseconds)
// need not go to the primary: the replica is asked for its replay position
// in the same round trip as the read — the position first, then the read's
// own statement, in one pipelined batch — and the read's rows are used only
// if that position is at or past the token. A statement's snapshot is taken
// when it starts, after the position was read, so it shows every
// transaction replayed up to that position: read-your-writes holds exactly
// as with a probed position. When the replica is behind, the rows are
// thrown away and the router polls the position on the same connection for
// up to ReplicaWait; once it is past the token, the read runs again there;
// otherwise it goes to the primary (reason token_ahead).

// replayPositionSQL is the replica's replay position as a number (NULL on a
// node that is not in recovery: never past any token).
const replayPositionSQL = `SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8`

// errReplicaBehind: the replica had not replayed the read's token when the
// read's first statement ran; its result was discarded.
var errReplicaBehind = errors.New("dbrouter: replica behind the read's token")

// Outcomes of a position check, the values of the outcome label of
// parley_db_replica_position_checks_total.
const (
	CheckCaughtUp = "caught_up" // the replica had replayed the token: served by its first attempt
	CheckWaited   = "waited"    // the replica caught up within ReplicaWait: served after polling
	CheckBehind   = "behind"    // still behind after ReplicaWait (or an error): the primary served
)

// gate is the postgres.Querier a checked read runs on: its first statement
// goes out in one batch behind replayPositionSQL and fails with
// errReplicaBehind when the replica is behind the token; later statements
// (after the check passed) run on the connection as they are.
type gate struct {
	conn   *pgxpool.Conn
	token  wal.LSN
	passed bool
	behind bool // a check found the replica behind the token
	br     pgx.BatchResults
	brErr  error
}

var _ postgres.Querier = (*gate)(nil)

// position reads the replay position on its own.
func (g *gate) position(ctx context.Context) error {
	var pos *int64
	if err := g.conn.QueryRow(ctx, replayPositionSQL).Scan(&pos); err != nil {
		return err
	}
	return g.judge(pos)
}

// judge passes the gate if the position read is at or past the token.
func (g *gate) judge(pos *int64) error {
	if pos == nil || *pos < 0 || wal.LSN(*pos) < g.token {
		g.behind = true
		return errReplicaBehind
	}
	g.passed = true
	return nil
}

func (g *gate) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if g.passed {
		return g.conn.Query(ctx, sql, args...)
	}
	b := &pgx.Batch{}
	b.Queue(replayPositionSQL)
	b.Queue(sql, args...)
	g.br = g.conn.SendBatch(ctx, b)
	var pos *int64
	if err := g.br.QueryRow().Scan(&pos); err != nil {
		g.closeBatch()
		return nil, err
	}
	if err := g.judge(pos); err != nil {
		g.closeBatch()
		return nil, err
	}
	rows, err := g.br.Query()
	if err != nil {
		g.closeBatch()
		return nil, err
	}
	return &gateRows{Rows: rows, g: g}, nil
}

func (g *gate) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := g.Query(ctx, sql, args...)
	return &gateRow{rows: rows, err: err}
}

func (g *gate) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if !g.passed {
		if err := g.position(ctx); err != nil {
			return pgconn.CommandTag{}, err
		}
	}
	return g.conn.Exec(ctx, sql, args...)
}

func (g *gate) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if !g.passed {
		if err := g.position(ctx); err != nil {
			return errBatch{err}
		}
	}
	return g.conn.SendBatch(ctx, b)
}

// closeBatch finishes the batch of the first statement (the connection is
// busy until then); its error is kept for the rows' Err.
func (g *gate) closeBatch() {
	if g.br == nil {
		return
	}
	if err := g.br.Close(); err != nil && g.brErr == nil {
		g.brErr = err
	}
	g.br = nil
}

// gateRows are the first statement's rows: finishing them finishes the batch.
type gateRows struct {
	pgx.Rows
	g *gate
}

func (r *gateRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.g.closeBatch()
	return false
}

func (r *gateRows) Close() {
	r.Rows.Close()
	r.g.closeBatch()
}

func (r *gateRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.g.brErr
}

// gateRow is QueryRow's row over gateRows (pgx's own semantics: ErrNoRows
// when there is none, the rows closed after Scan).
type gateRow struct {
	rows pgx.Rows
	err  error
}

func (r *gateRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// errBatch is a pgx.BatchResults whose every result is err.
type errBatch struct{ err error }

func (b errBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b errBatch) Query() (pgx.Rows, error)         { return nil, b.err }
func (b errBatch) QueryRow() pgx.Row                { return &gateRow{err: b.err} }
func (b errBatch) Close() error                     { return b.err }
func (b errBatch) Tx() pgx.Tx                       { return nil }

// checkedRead runs fn on conn (a connection of rep) held to token: through
// a gate, then, while rep is behind, polling its position for up to
// ReplicaWait and running fn again once it has caught up. outcome is one of
// the Check* values; behind (with a nil error) says the primary must serve.
func (r *Router) checkedRead(ctx context.Context, rep *replica, conn *pgxpool.Conn, token wal.LSN, fn func(context.Context, postgres.Querier) error) (outcome string, err error) {
	g := &gate{conn: conn, token: token}
	err = fn(ctx, g)
	g.closeBatch()
	// g.behind too: a function that dropped the gate's error must not
	// return what it read without it.
	if !errors.Is(err, errReplicaBehind) && !g.behind {
		return CheckCaughtUp, err
	}
	if r.cfg.ReplicaWait <= 0 {
		return CheckBehind, nil
	}
	deadline := time.Now().Add(r.cfg.ReplicaWait)
	// Streaming replay usually trails by well under a millisecond to a few:
	// look again soon, then back off a little.
	pause := 250 * time.Microsecond
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return CheckBehind, nil
		}
		t := time.NewTimer(min(pause, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return CheckBehind, ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, 2*time.Millisecond)
		g = &gate{conn: conn, token: token}
		if err := g.position(ctx); err != nil {
			if errors.Is(err, errReplicaBehind) {
				continue
			}
			return CheckBehind, fmt.Errorf("%s replay position: %w", rep.name, err)
		}
		// Caught up on this connection: the read's statements start after
		// it, and the gate, passed, lets them through.
		return CheckWaited, fn(ctx, g)
	}
}
