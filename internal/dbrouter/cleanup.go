package dbrouter

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Bounded cleanup of abandoned connections.
//
// When a query's context ends before its answer (the request's database
// budget, the replica read bound), pgx closes the connection in the
// background: it sends PostgreSQL a cancel request over a new connection and
// waits until the server closes that one, then sends Terminate and reads
// until the server closes the connection itself — up to 15 s each. pgxpool
// keeps the connection's slot until that cleanup is over. Behind PgBouncer,
// which handles a cancel with a server connection of its own and answers
// nothing while it is stopped or stalled, every request cut by its deadline
// then held a slot of the instance's pool for seconds: after PgBouncer was
// restarted or resumed, requests failed at the 100 ms pool wait
// ("acquire primary connection: context deadline exceeded") for 2 to 27 s
// (parley chaos pgbouncer-restart), long after PgBouncer could serve again.
//
// cleanupDial wraps the pools' dialer so that such a cleanup takes at most
// cleanupBound per step: a connection that writes a cancel request (the
// cancel connection) or a Terminate (the abandoned connection) gets a
// deadline cleanupBound away. The cancel is a courtesy — the role's
// statement_timeout (migration 0070) ends the query on the server anyway —
// and a server that reads the Terminate closes the connection at once.
// With TLS the bytes written are encrypted and nothing is shortened (pgx's
// own bounds apply).

// cleanupBound bounds each step of the cleanup of an abandoned connection.
const cleanupBound = time.Second

// cancelRequestCode is the protocol's CancelRequest code (1234 << 16 | 5678).
const cancelRequestCode = 80877102

// terminateMsg is the protocol's Terminate message.
var terminateMsg = []byte{'X', 0, 0, 0, 4}

// cleanupDial returns dial (nil: a net.Dialer) whose connections bound their
// own cleanup (see above).
func cleanupDial(dial pgconn.DialFunc, bound time.Duration) pgconn.DialFunc {
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &cleanupConn{Conn: c, bound: bound}, nil
	}
}

// cleanupConn is a connection that sets itself a deadline bound away once it
// has written a cancel request or a Terminate.
type cleanupConn struct {
	net.Conn
	bound time.Duration
}

func (c *cleanupConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	// pgx writes each of them alone (a cancel request on a connection of
	// its own, Terminate in a flush of its own): the whole write is
	// compared, so that the data of a COPY or a Bind cannot match.
	if err == nil && (isCancelRequest(b) || bytes.Equal(b, terminateMsg)) {
		_ = c.Conn.SetDeadline(time.Now().Add(c.bound))
	}
	return n, err
}

// isCancelRequest reports whether b is a whole CancelRequest packet: its
// length, the code, the process id and the secret key (4 bytes up to
// protocol 3.1, up to 256 from 3.2).
func isCancelRequest(b []byte) bool {
	return len(b) >= 16 && len(b) <= 12+256 &&
		binary.BigEndian.Uint32(b[0:4]) == uint32(len(b)) &&
		binary.BigEndian.Uint32(b[4:8]) == cancelRequestCode
}
