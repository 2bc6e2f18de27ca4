package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrUnavailable wraps errors that mean the primary cannot serve now: it is
// unreachable, the connection broke, or no pooled connection was free within
// the acquire wait bound (Config.AcquireTimeout). The HTTP edge maps it to
// 503 with Retry-After; errors.Unwrap gives the cause (for the log only).
var ErrUnavailable = errors.New("database unavailable")

// IsConnectionError reports whether err means the node or the connection to
// it failed, as opposed to the statement: SQLSTATE class 08 (connection
// exception), 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03
// cannot_connect_now, 53300 too_many_connections (the node refuses new
// sessions), failed connection attempts, and network errors
// (refused, reset, EOF, closed connection). Context cancellations and
// deadlines (the caller's) and statement timeouts (57014) are not connection
// errors. These are the errors that open a replica's breaker and that a
// replica read is retried on the primary after. It is Parley's one
// classification of database errors: the store (internal/postgres) and the
// HTTP edge use it too.
func IsConnectionError(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return connectionSQLState(pgErr.Code)
	}
	switch {
	case errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH):
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr)
}

func connectionSQLState(code string) bool {
	if len(code) == 5 && code[:2] == "08" {
		return true
	}
	switch code {
	case "57P01", "57P02", "57P03", "53300":
		return true
	}
	return false
}

// Classify wraps err in ErrUnavailable when it means the primary could not
// serve the call made with ctx: a connection error, a deadline that is not
// the caller's (the acquire wait bound) while ctx is still live, or a
// statement ended by the server's statement or lock timeout (IsTimeout). Other errors
// (SQL errors, the caller's own cancellation) are returned unchanged. Use it on
// errors from Primary() used directly; Read, InTx, CommitLSN and Ping apply it
// already.
func Classify(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
		return err
	}
	if IsConnectionError(err) || errors.Is(err, context.DeadlineExceeded) || IsTimeout(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// IsTimeout reports whether the server ended a statement at one of its
// bounds: 57014 query_canceled (statement_timeout, or a cancel request) or
// 55P03 lock_not_available (lock_timeout). The statement failed and its
// transaction rolled back; the connection is fine. The service answers it
// like unavailability (503 + Retry-After): the database could not serve the
// request within its budget.
func IsTimeout(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "57014" || pe.Code == "55P03")
}

// ErrCommitUnknown marks a write whose COMMIT (or autocommitted statement)
// was sent and never answered — the connection broke, or the deadline came:
// it may or may not have committed. It always comes with ErrUnavailable or
// a deadline (503). The caller must act as if it had committed (invalidate
// what it would have changed) and let the client retry: a send with its
// Idempotency-Key then finds its row, or makes it.
var ErrCommitUnknown = errors.New("the write's outcome is unknown: its commit was sent and not answered")

// commitUnknown wraps err, an error from a COMMIT or an autocommitted write
// statement, in ErrCommitUnknown unless the server answered it (a PgError:
// the write did not commit) or it was not sent at all.
func commitUnknown(err error) error {
	var pe *pgconn.PgError
	if err == nil || errors.As(err, &pe) {
		return err
	}
	if IsConnectionError(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: %w", ErrCommitUnknown, err)
	}
	return err
}
