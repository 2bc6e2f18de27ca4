package loadgen

import (
	"context"
	"io"
	"math"
	"time"
)

// The closed model (autocannon's and wrk's): N keep-alive connections, each
// keeping up to P requests outstanding (HTTP/1.1 pipelining) and sending the
// next one as soon as a response comes back. It measures raw capacity. Each
// request is timed individually: its send time is taken when the bytes are
// flushed to the socket, and responses are matched to requests FIFO, so a
// pipelined batch yields P latencies, not one.
//
// A closed model cannot see a stall as users would: while the server is
// stuck, the generator is stuck too and sends nothing, so only the N·P
// requests in flight are slow. Use the open model for latency SLOs.

type closedEngine struct {
	ctx      context.Context
	cfg      *engineConfig
	wl       Workload
	d        *dialer
	crew     crew
	rec      *recorder
	draining chan struct{}
}

func newClosedEngine(ctx context.Context, cfg *engineConfig, wl Workload) *closedEngine {
	e := &closedEngine{
		ctx:      ctx,
		cfg:      cfg,
		wl:       wl,
		d:        newDialer(cfg.eps, cfg.dialConcurrency, cfg.dialTimeout),
		draining: make(chan struct{}),
	}
	if e.cfg.pipelining < 1 {
		e.cfg.pipelining = 1
	}
	e.crew.start = e.worker
	return e
}

// run dials the first stage's connections, then keeps them busy for
// prof.total, following the profile's connection counts.
func (e *closedEngine) run(ctx context.Context, prof *profile, rec *recorder, w io.Writer, label string) runResult {
	e.rec = rec
	pre := predial(ctx, e.d, 0, prof.connsAt(0), e.cfg.timeout, w, label)
	start := time.Now()
	rec.begin(start)
	e.crew.resize(prof.connsAt(0), pre)

	timed := supervise(ctx, e.cfg, e.d, &e.crew, prof, rec, start, false) // shorter when interrupted
	close(e.draining)                                                     // no new requests; in-flight ones complete
	done := make(chan struct{})
	go func() { e.crew.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(e.cfg.timeout + time.Second):
	}
	e.crew.stopAll()
	end := time.Now()
	rec.tick(end, e.d.open.Load(), len(prof.stages)-1, false)
	return runResult{
		rec:        rec,
		secs:       timed.Seconds(),
		elapsed:    math.Max(timed.Seconds(), end.Sub(start).Seconds()),
		requested:  prof.maxConns(),
		peak:       e.d.peak.Load(),
		peakPer:    e.d.peaks(),
		dialFails:  e.d.failures.Load(),
		reconnects: e.d.reconnect.Load(),
		cpuSecs:    (processCPU() - rec.startCPU).Seconds(),
		marks:      prof.marks(false),
	}
}

// pending is a request written to the connection whose response has not
// been read yet.
type pending struct {
	req     *Request
	sent    time.Time
	retried bool
}

type closedWorker struct {
	id       int
	e        *closedEngine
	src      Source
	c        *conn
	sh       *shard
	inflight []pending // FIFO: responses come back in request order
	keep     []byte
}

func (e *closedEngine) worker(id int, stop <-chan struct{}, c *conn) {
	w := &closedWorker{id: id, e: e, src: e.wl.NewSource(id), c: c, sh: e.rec.shard(id),
		inflight: make([]pending, 0, e.cfg.pipelining)}
	defer func() { w.c.close() }()
	backoff := 10 * time.Millisecond
	for {
		stopping := false
		select {
		case <-stop:
			stopping = true
		case <-e.draining:
			stopping = true
		case <-e.ctx.Done():
			return // interrupted: what is in flight is neither a success nor a failure
		default:
		}
		if stopping && len(w.inflight) == 0 {
			return
		}
		if w.c == nil {
			nc, err := e.d.dial(e.ctx, w.id)
			if err != nil {
				if e.ctx.Err() != nil {
					return
				}
				// Count the failed connection as one failed request.
				req := w.src.Next()
				w.sh.record(sample{op: req.Op, target: e.d.target(w.id), class: classConnect, latency: -1, service: -1, lag: -1})
				w.src.Done(req, 0, nil)
				w.failAll(classConnect)
				if stopping {
					return
				}
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			backoff = 10 * time.Millisecond
			w.c = nc
			// Re-send what a closed connection left unanswered.
			if len(w.inflight) > 0 && !w.resend() {
				continue
			}
		}
		w.c.acquire()
		if !stopping && !w.fill() {
			continue
		}
		// The whole batch is read before the next one is written.
		for w.c != nil && len(w.inflight) > 0 {
			w.readOne()
		}
	}
}

// fill writes a batch of P requests once the previous batch is all
// answered, and flushes it in one write (wrk's pipelining): one write per
// batch, and its responses, which the server answers back to back, mostly
// come in one read. The flush time is each request's send time, and each
// response is timed when it is parsed: every request still has its own
// latency. With nothing outstanding the write is deferred into the next
// read (rawIO), which then waits for the answers at once.
func (w *closedWorker) fill() bool {
	if len(w.inflight) > 0 {
		return true // the batch is not all answered yet
	}
	for len(w.inflight) < cap(w.inflight) {
		req := w.src.Next()
		writeRequest(w.c.bw, w.c.ep.host, req)
		w.inflight = append(w.inflight, pending{req: req})
	}
	now := time.Now()
	for i := range w.inflight {
		w.inflight[i].sent = now
	}
	if err := w.c.flush(true); err != nil {
		w.fail(err, true)
		return false
	}
	return true
}

// resend writes the outstanding requests again on a new connection,
// keeping their original send times (the wait counts as latency).
func (w *closedWorker) resend() bool {
	w.c.acquire()
	for _, p := range w.inflight {
		writeRequest(w.c.bw, w.c.ep.host, p.req)
	}
	if err := w.c.flush(true); err != nil {
		w.fail(err, true)
		return false
	}
	return true
}

// readOne reads the response to the oldest outstanding request.
func (w *closedWorker) readOne() {
	head := w.inflight[0]
	// The read deadline (re-arming it re-arms a runtime timer) is set only
	// when the one set does not cover this request's timeout, with a quarter
	// of the timeout to spare, so that it is re-armed once per several
	// batches, not once per request; a response that comes after the
	// timeout all the same counts as a timeout below.
	timeout := w.e.cfg.timeout
	if need := head.sent.Add(timeout); w.c.deadline.Before(need) {
		dl := need.Add(timeout / 4)
		_ = w.c.nc.SetReadDeadline(dl)
		w.c.deadline = dl
	}
	var keep *[]byte
	if head.req.WantBody {
		keep = &w.keep
	}
	resp, err := readResponse(w.c.br, head.req.Method, keep)
	if err != nil {
		w.fail(err, false)
		return
	}
	end := time.Now()
	if lat := end.Sub(head.sent); lat > timeout {
		w.sh.record(sample{op: head.req.Op, target: w.c.target, class: classTimeout, latency: -1, service: -1, lag: -1})
	} else {
		w.sh.record(sample{op: head.req.Op, target: w.c.target, class: statusClass(resp.status), status: resp.status,
			latency: lat, service: -1, lag: -1, retryAfter: resp.retryAfter})
	}
	w.src.Done(head.req, resp.status, resp.body)
	copy(w.inflight, w.inflight[1:])
	w.inflight = w.inflight[:len(w.inflight)-1]
	w.c.served++
	if cap(w.keep) > 64<<10 {
		w.keep = nil // do not pin a large buffer to the connection
	}
	if resp.close {
		w.c.close()
		w.c = nil
		w.markRetry()
	}
}

// fail handles an I/O error on the connection. A keep-alive connection that
// the server closed before answering anything new is retried once (the
// outstanding requests are re-sent); everything else fails the outstanding
// requests.
func (w *closedWorker) fail(err error, writing bool) {
	served := w.c.served
	w.c.close()
	w.c = nil
	if staleConn(err) && served > 0 && w.markRetry() {
		w.e.d.reconnect.Add(1)
		return
	}
	w.failAll(classify(err, writing))
}

// markRetry flags the outstanding requests as retried; it reports false
// (and fails them) when one of them was already retried once.
func (w *closedWorker) markRetry() bool {
	for i := range w.inflight {
		if w.inflight[i].retried {
			w.failAll(classRead)
			return false
		}
		w.inflight[i].retried = true
	}
	return true
}

func (w *closedWorker) failAll(class errClass) {
	t := w.e.d.target(w.id)
	for _, p := range w.inflight {
		w.sh.record(sample{op: p.req.Op, target: t, class: class, latency: -1, service: -1, lag: -1})
		w.src.Done(p.req, 0, nil)
	}
	w.inflight = w.inflight[:0]
}
