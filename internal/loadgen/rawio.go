package loadgen

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// rawIO sits under a plain-TCP connection's buffers and saves one syscall per
// request when nothing is outstanding on the connection (the closed model at
// pipelining 1, every open-model send): instead of writing the request and
// then trying a read that can only fail with EAGAIN before parking in the
// netpoller, the write is deferred into the next Read, which writes from
// inside syscall.RawConn.Read and goes straight to waiting for readability.
// This is safe only when no response bytes can already be waiting (the
// netpoller's readiness is reset before the callback runs, so data that
// arrived earlier would not wake the reader), hence the "drained" condition
// callers promise in conn.flush.
type rawIO struct {
	nc          net.Conn
	rc          syscall.RawConn
	deferWrites bool   // Write appends to out instead of writing
	out         []byte // deferred request bytes, written by the next Read

	// the state of one deferred write-then-read, kept here rather than in
	// a closure's captured variables (which would be allocated per call)
	readFn     func(fd uintptr) bool // r.rawRead, bound once
	buf        []byte
	n, off     int
	wrote      bool
	rerr, werr error
}

func newRawIO(nc net.Conn) *rawIO {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{nc: nc, rc: rc}
	r.readFn = r.rawRead
	return r
}

func (r *rawIO) Write(p []byte) (int, error) {
	if r.deferWrites {
		r.out = append(r.out, p...)
		return len(p), nil
	}
	return r.nc.Write(p)
}

// writeError marks an error of the deferred write, so that it is classified
// as a write failure although it surfaces from a Read.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

func isWriteError(err error) bool {
	var we *writeError
	return errors.As(err, &we)
}

func (r *rawIO) Read(p []byte) (int, error) {
	if len(r.out) == 0 {
		return r.nc.Read(p)
	}
	r.buf, r.n, r.off, r.wrote, r.rerr, r.werr = p, 0, 0, false, nil, nil
	err := r.rc.Read(r.readFn)
	n, off, rerr, werr := r.n, r.off, r.rerr, r.werr
	r.buf, r.rerr, r.werr = nil, nil, nil
	rest := r.out[off:]
	r.out = r.out[:0]
	if cap(r.out) > 16<<10 {
		r.out = nil
	}
	if werr != nil {
		return 0, &writeError{&net.OpError{Op: "write", Net: "tcp", Err: werr}}
	}
	if len(rest) > 0 && err == nil {
		if _, e := r.nc.Write(rest); e != nil {
			return 0, &writeError{e}
		}
		return r.nc.Read(p)
	}
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		if n < 0 {
			n = 0
		}
		return n, &net.OpError{Op: "read", Net: "tcp", Err: rerr}
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// rawRead is the syscall.RawConn callback of Read: the deferred write, then
// (once the socket is readable) the read.
func (r *rawIO) rawRead(fd uintptr) bool {
	if !r.wrote {
		for r.off < len(r.out) {
			m, e := syscall.Write(int(fd), r.out[r.off:])
			if e == syscall.EINTR {
				continue
			}
			if e == syscall.EAGAIN {
				break // send buffer full: finish with a blocking write in Read
			}
			if e != nil {
				r.werr = e
				return true
			}
			r.off += m
		}
		r.wrote = true
		if r.off < len(r.out) {
			return true
		}
		return false // nothing can be buffered yet: wait for readability
	}
	r.n, r.rerr = syscall.Read(int(fd), r.buf)
	if r.rerr == syscall.EAGAIN || r.rerr == syscall.EINTR {
		r.n, r.rerr = 0, nil
		return false
	}
	return true
}
