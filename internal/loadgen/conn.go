package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Buffer sizes per connection: small, so that 10k connections stay cheap.
// A response larger than the read buffer is streamed through it.
const (
	readBufSize  = 4 << 10
	writeBufSize = 2 << 10
)

// endpoint is a parsed target: where to dial and what to send as Host.
type endpoint struct {
	addr     string // host:port
	host     string // Host header
	tls      bool
	basePath string // path prefix of the target URL, without trailing slash
}

func parseEndpoint(raw string) (endpoint, *url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return endpoint{}, nil, fmt.Errorf("parse target %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return endpoint{}, nil, fmt.Errorf("target %q: scheme must be http or https", raw)
	}
	if u.Host == "" {
		return endpoint{}, nil, fmt.Errorf("target %q: no host", raw)
	}
	e := endpoint{host: u.Host, tls: u.Scheme == "https"}
	port := u.Port()
	if port == "" {
		port = "80"
		if e.tls {
			port = "443"
		}
	}
	e.addr = net.JoinHostPort(u.Hostname(), port)
	p := u.EscapedPath()
	for len(p) > 0 && p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	e.basePath = p
	return e, u, nil
}

// dialer opens connections to one or more endpoints (the targets: slot i
// goes to eps[i % len(eps)], so connections spread evenly) with bounded
// concurrency and a timeout, and counts them (requested vs established).
type dialer struct {
	eps     []endpoint
	sem     chan struct{}
	timeout time.Duration
	nd      net.Dialer

	open      atomic.Int64   // currently established
	peak      atomic.Int64   // most established at once
	dials     atomic.Int64   // successful dials
	failures  atomic.Int64   // failed dials
	prime     *Request       // sent once on every held connection (nil: none)
	reconnect atomic.Int64   // connections found closed by the server and redialled
	perTarget []atomic.Int64 // currently established, per endpoint
	peakPer   []atomic.Int64 // most established at once, per endpoint
}

func newDialer(eps []endpoint, concurrency int, timeout time.Duration) *dialer {
	if concurrency <= 0 {
		concurrency = 256
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &dialer{eps: eps, sem: make(chan struct{}, concurrency), timeout: timeout,
		perTarget: make([]atomic.Int64, len(eps)), peakPer: make([]atomic.Int64, len(eps))}
}

// target is the endpoint index of connection slot i.
func (d *dialer) target(slot int) int { return slot % len(d.eps) }

// conn is one keep-alive HTTP/1.1 connection.
type conn struct {
	ep       *endpoint // where it goes (its Host header)
	target   int       // the endpoint's index among the targets
	nc       net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	d        *dialer
	raw      *rawIO    // under br and bw for plain TCP (nil: TLS)
	served   int       // responses read on this connection
	deadline time.Time // read deadline last set by the closed model
	released bool
}

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufSize) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufSize) }}
)

// dialHeld opens a connection that will be held open idle: when the dialer
// has a priming request (the scenarios: GET /healthz), it is sent once, not
// recorded, so that the server treats the connection as a kept-alive one
// (Go's server closes a new connection that sends nothing within its
// ReadHeaderTimeout, 5 s in parley serve, but keeps a used one for its
// IdleTimeout).
func (d *dialer) dialHeld(ctx context.Context, timeout time.Duration, slot int) (*conn, error) {
	c, err := d.dial(ctx, slot)
	if err != nil || d.prime == nil {
		return c, err
	}
	if err := c.ping(d.prime, timeout); err != nil {
		c.close()
		d.failures.Add(1)
		return nil, fmt.Errorf("prime connection: %w", err)
	}
	return c, nil
}

// ping sends req and reads (and discards) its response, unrecorded.
func (c *conn) ping(req *Request, timeout time.Duration) error {
	c.acquire()
	writeRequest(c.bw, c.ep.host, req)
	if err := c.flush(true); err != nil {
		return err
	}
	c.deadline = time.Now().Add(timeout)
	_ = c.nc.SetReadDeadline(c.deadline)
	resp, err := readResponse(c.br, req.Method, nil)
	if err != nil {
		return err
	}
	if resp.close {
		return fmt.Errorf("%s %s: the server closed the connection", req.Method, req.Path)
	}
	c.release()
	return nil
}

// dial opens connection slot's connection (to eps[slot % len(eps)]).
func (d *dialer) dial(ctx context.Context, slot int) (*conn, error) {
	t := d.target(slot)
	ep := &d.eps[t]
	select {
	case d.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-d.sem }()
	dctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	nc, err := d.nd.DialContext(dctx, "tcp", ep.addr)
	if err != nil {
		d.failures.Add(1)
		return nil, fmt.Errorf("dial %s: %w", ep.addr, err)
	}
	if ep.tls {
		host, _, _ := net.SplitHostPort(ep.host)
		if host == "" {
			host = ep.host
		}
		tc := tls.Client(nc, &tls.Config{ServerName: host, NextProtos: []string{"http/1.1"}})
		if err := tc.HandshakeContext(dctx); err != nil {
			nc.Close()
			d.failures.Add(1)
			return nil, fmt.Errorf("tls handshake %s: %w", ep.addr, err)
		}
		nc = tc
	}
	d.dials.Add(1)
	raisePeak(&d.peak, d.open.Add(1))
	raisePeak(&d.peakPer[t], d.perTarget[t].Add(1))
	return &conn{ep: ep, target: t, nc: nc, d: d, raw: newRawIO(nc), released: true}, nil
}

// raisePeak makes peak at least n.
func raisePeak(peak *atomic.Int64, n int64) {
	for {
		p := peak.Load()
		if n <= p || peak.CompareAndSwap(p, n) {
			return
		}
	}
}

// flush sends what writeRequest buffered. drained promises that no response
// is outstanding on the connection (none can be on its way): the write is
// then deferred into the next read (see rawIO), which saves a syscall.
func (c *conn) flush(drained bool) error {
	if !drained || c.raw == nil {
		return c.bw.Flush()
	}
	c.raw.deferWrites = true
	err := c.bw.Flush()
	c.raw.deferWrites = false
	return err
}

// acquire attaches pooled read/write buffers. Idle held connections give
// them back (release), so a held connection costs little more than its
// goroutine and socket.
func (c *conn) acquire() {
	if !c.released {
		return
	}
	var rw io.ReadWriter = c.nc
	if c.raw != nil {
		rw = c.raw
	}
	c.br = readerPool.Get().(*bufio.Reader)
	c.br.Reset(rw)
	c.bw = writerPool.Get().(*bufio.Writer)
	c.bw.Reset(rw)
	c.released = false
}

// release returns the buffers to the pools when nothing is buffered.
func (c *conn) release() {
	if c.released || c.br.Buffered() > 0 || c.bw.Buffered() > 0 {
		return
	}
	c.br.Reset(nil)
	readerPool.Put(c.br)
	c.bw.Reset(nil)
	writerPool.Put(c.bw)
	c.br, c.bw = nil, nil
	c.released = true
}

func (c *conn) close() {
	if c == nil || c.nc == nil {
		return
	}
	c.nc.Close()
	c.nc = nil
	c.d.open.Add(-1)
	c.d.perTarget[c.target].Add(-1)
	if !c.released {
		c.br.Reset(nil)
		readerPool.Put(c.br)
		c.bw.Reset(nil)
		writerPool.Put(c.bw)
		c.br, c.bw = nil, nil
		c.released = true
	}
}

// errClass is the error class a failed request is counted under.
type errClass uint8

const (
	classNone     errClass = iota
	classConnect           // could not establish a connection
	classTimeout           // no complete response within the request timeout
	classWrite             // writing the request failed
	classRead              // the connection failed while reading the response
	classProtocol          // the response was not valid HTTP/1.1
	classHTTP4xx           // a 4xx status
	classHTTP5xx           // a 5xx status
	classDropped           // the generator never sent it (see open model)
	numClasses
)

var classNames = [numClasses]string{"", "connect", "timeout", "write", "read", "protocol", "http_4xx", "http_5xx", "dropped"}

func (c errClass) String() string { return classNames[c] }

// classify maps an I/O error to its class.
func classify(err error, writing bool) errClass {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return classTimeout
	case errors.Is(err, os.ErrDeadlineExceeded):
		return classTimeout
	case errors.Is(err, errProtocol):
		return classProtocol
	case writing || isWriteError(err):
		return classWrite
	default:
		return classRead
	}
}

// staleConn reports whether err looks like a keep-alive connection that the
// server had already closed (safe to retry once on a new connection).
func staleConn(err error) bool {
	return errors.Is(err, errNoResponse) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// RaiseOpenFilesLimit lifts the soft RLIMIT_NOFILE to the hard limit and
// returns the new soft limit.
func RaiseOpenFilesLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return rl.Cur, fmt.Errorf("setrlimit: %w", err)
		}
	}
	return rl.Cur, nil
}
