package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestIsConnectionError(t *testing.T) {
	pg := func(code string) error { return &pgconn.PgError{Code: code, Message: "m"} }
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"08006 connection_failure", pg("08006"), true},
		{"08001 client unable to establish", pg("08001"), true},
		{"08P01 protocol violation", pg("08P01"), true},
		{"57P01 admin_shutdown", pg("57P01"), true},
		{"57P02 crash_shutdown", pg("57P02"), true},
		{"57P03 cannot_connect_now", pg("57P03"), true},
		{"53300 too_many_connections", pg("53300"), true},
		{"wrapped 57P01", fmt.Errorf("query: %w", pg("57P01")), true},
		{"57014 statement timeout / query_canceled", pg("57014"), false},
		{"40001 serialization failure", pg("40001"), false},
		{"42P01 undefined table", pg("42P01"), false},
		{"23505 unique violation", pg("23505"), false},
		{"no rows", pgx.ErrNoRows, false},
		{"caller cancelled", context.Canceled, false},
		{"caller deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, true},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"broken pipe", syscall.EPIPE, true},
		{"unexpected EOF", fmt.Errorf("failed to receive message: %w", io.ErrUnexpectedEOF), true},
		{"EOF", io.EOF, true},
		{"conn closed", fmt.Errorf("x: %w", pgconn.ErrConnClosed), true},
		{"net closed", net.ErrClosed, true},
		{"dns error", &net.DNSError{Err: "no such host", Name: "db"}, true},
		{"plain error", errors.New("boom"), false},
	}
	for _, tt := range tests {
		if got := IsConnectionError(tt.err); got != tt.want {
			t.Errorf("%s: IsConnectionError(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestClassify(t *testing.T) {
	live := context.Background()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	refused := fmt.Errorf("dial: %w", syscall.ECONNREFUSED)
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want bool // errors.Is(result, ErrUnavailable)
	}{
		{"nil", live, nil, false},
		{"connection error", live, refused, true},
		{"acquire bound (deadline not the caller's)", live, fmt.Errorf("acquire: %w", context.DeadlineExceeded), true},
		{"caller gave up", done, refused, false},
		{"caller's deadline", done, context.DeadlineExceeded, false},
		{"sql error", live, &pgconn.PgError{Code: "23505"}, false},
		// The server ended the statement at statement_timeout or
		// lock_timeout: the database could not serve it within its bound,
		// answered like unavailability (503 + Retry-After).
		{"statement timeout", live, &pgconn.PgError{Code: "57014"}, true},
		{"lock timeout", live, &pgconn.PgError{Code: "55P03"}, true},
		{"already classified", live, fmt.Errorf("%w: x", ErrUnavailable), true},
	}
	for _, tt := range tests {
		got := Classify(tt.ctx, tt.err)
		if errors.Is(got, ErrUnavailable) != tt.want {
			t.Errorf("%s: Classify(%v) = %v, unavailable want %v", tt.name, tt.err, got, tt.want)
		}
		if tt.err != nil && !errors.Is(got, tt.err) {
			t.Errorf("%s: the cause is lost: %v", tt.name, got)
		}
	}
}
