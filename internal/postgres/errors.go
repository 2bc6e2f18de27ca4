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

// ErrUnavailable wraps errors that mean the database cannot serve now: it
// is unreachable, the connection broke, or no pooled connection was free
// within the acquire bound. The HTTP edge answers 503 with Retry-After.
var ErrUnavailable = errors.New("database unavailable")

// IsConnectionError reports whether err means the server or the connection
// to it failed, as opposed to the statement: SQLSTATE class 08, 57P01–57P03,
// 53300 (too many connections), failed connection attempts and network
// errors. The caller's own cancellations and deadlines are not.
func IsConnectionError(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		c := pe.Code
		return len(c) == 5 && c[:2] == "08" || c == "57P01" || c == "57P02" || c == "57P03" || c == "53300"
	}
	switch {
	case errors.Is(err, pgconn.ErrConnClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH):
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// Classify wraps err in ErrUnavailable when it means the database could not
// serve a call made with ctx: a connection error, or a deadline that is not
// ctx's own (the acquire bound) while ctx is still live. Other errors come
// back unchanged.
func Classify(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
		return err
	}
	if IsConnectionError(err) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}
