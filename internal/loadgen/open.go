package loadgen

import (
	"context"
	"io"
	"math"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// The open model (wrk2's): requests arrive on a schedule (a constant or
// ramping rate) whether or not earlier ones have been answered, and every
// latency is measured from the request's INTENDED send time. A server stall
// therefore shows up as the queue of requests that should have gone out
// during it, instead of as one slow request per connection (coordinated
// omission). Sends that start late because every connection was busy are
// counted (send lag, late) and so are intended sends that were never made
// (dropped) — they are never hidden.
//
// The connections are held open for the whole run (the scenarios' "5k
// connections held"): one goroutine per connection waits for the next due
// request on a shared queue, so a connection is only busy while a request is
// in flight on it.

// token is one intended send.
type token struct {
	intended time.Time
	rec      *recorder
	busy     bool // no worker was waiting when it fell due
}

// tokenQueue bounds the backlog of due sends. A full queue blocks the
// scheduler, but intended times come from the schedule, not the clock, so
// the delay still shows in the latencies.
const tokenQueue = 1 << 16

type openEngine struct {
	ctx    context.Context
	cfg    *engineConfig
	wl     Workload
	d      *dialer
	crew   crew
	tokens chan token
	idle   atomic.Int64 // workers waiting for a token
}

func newOpenEngine(ctx context.Context, cfg *engineConfig, wl Workload) *openEngine {
	e := &openEngine{
		ctx:    ctx,
		cfg:    cfg,
		wl:     wl,
		d:      newDialer(cfg.eps, cfg.dialConcurrency, cfg.dialTimeout),
		tokens: make(chan token, tokenQueue),
	}
	e.d.prime = cfg.keepAlive
	e.crew.start = e.worker
	return e
}

// hold grows (or shrinks) the set of held connections to n, dialling the new
// ones before returning.
func (e *openEngine) hold(ctx context.Context, n int, w io.Writer, label string) {
	if grow := n - e.crew.size(); grow > 0 {
		pre := predial(ctx, e.d, e.crew.nextID(), grow, e.cfg.timeout, w, label)
		e.crew.resize(n, pre)
		return
	}
	e.crew.resize(n, nil)
}

func (e *openEngine) close() { e.crew.stopAll() }

// run offers load on prof's schedule for prof.total and records into rec.
func (e *openEngine) run(ctx context.Context, prof *profile, rec *recorder) runResult {
	start := time.Now()
	rec.begin(start)
	schedCtx, cancelSched := context.WithCancel(ctx)
	defer cancelSched()
	lagCh := make(chan Latency, 1)
	go func() { lagCh <- e.schedule(schedCtx, prof, start, rec) }()

	timed := supervise(ctx, e.cfg, e.d, &e.crew, prof, rec, start, true) // shorter when interrupted
	// The scheduler stops by itself at prof.total (or when ctx ends).
	if ctx.Err() != nil {
		cancelSched()
	}
	lag := <-lagCh

	// Drain: let the due sends go out and their responses come back.
	grace := time.Now().Add(e.cfg.timeout + time.Second)
	for rec.finished.Load() < rec.offered.Load() && time.Now().Before(grace) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	var unsent int64
	for {
		select {
		case <-e.tokens:
			unsent++
			continue
		default:
		}
		break
	}
	rec.unsent += unsent
	end := time.Now()
	rec.tick(end, e.d.open.Load(), len(prof.stages)-1, true)
	return runResult{
		rec:        rec,
		secs:       timed.Seconds(),
		elapsed:    math.Max(timed.Seconds(), end.Sub(start).Seconds()),
		open:       true,
		requested:  prof.maxConns(),
		peak:       e.d.peak.Load(),
		peakPer:    e.d.peaks(),
		dialFails:  e.d.failures.Load(),
		reconnects: e.d.reconnect.Load(),
		schedLag:   lag,
		offered:    rec.offered.Load(),
		dropped:    rec.droppedTotal(),
		cpuSecs:    (processCPU() - rec.startCPU).Seconds(),
		marks:      prof.marks(true),
	}
}

// schedule emits one token per intended send and returns the distribution
// of its own lateness (how far behind the schedule the generator itself ran).
func (e *openEngine) schedule(ctx context.Context, prof *profile, start time.Time, rec *recorder) Latency {
	// Go's timers wake up to a millisecond late here; nanosleep on a thread
	// of its own is accurate to ~0.1 ms, and the scheduler's lateness would
	// otherwise be added to every latency.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h := newHist()
	// Arrivals fall where the integral of the rate crosses k + ½.
	t, ok := prof.advance(0, 0.5)
	for ; ok && t < prof.total; t, ok = prof.advance(t, 1) {
		intended := start.Add(t)
		if !sleepUntil(ctx, intended) {
			break
		}
		if late := time.Since(intended); late > 0 {
			recordDur(h, late)
		} else {
			recordDur(h, 0)
		}
		rec.offered.Add(1)
		select {
		case e.tokens <- token{intended: intended, rec: rec, busy: e.idle.Load() <= int64(len(e.tokens))}:
		case <-ctx.Done():
			rec.offered.Add(-1)
			return latencyOf(h)
		}
	}
	return latencyOf(h)
}

// openWorker is one held connection.
type openWorker struct {
	id  int
	e   *openEngine
	src Source
	c   *conn
}

func (e *openEngine) worker(id int, stop <-chan struct{}, c *conn) {
	w := &openWorker{id: id, e: e, src: e.wl.NewSource(id), c: c}
	defer func() { w.c.close() }()
	if w.c == nil {
		if c, err := e.d.dialHeld(e.ctx, e.cfg.timeout, id); err == nil {
			w.c = c
		}
	}
	// Keep the held connection alive while it waits: a server closes
	// connections idle for longer than its idle timeout.
	var idle <-chan time.Time
	var timer *time.Timer
	if e.cfg.keepAlive != nil {
		timer = time.NewTimer(keepAliveIdle)
		defer timer.Stop()
		idle = timer.C
	}
	for {
		e.idle.Add(1)
		select {
		case <-stop:
			e.idle.Add(-1)
			return
		case <-e.ctx.Done():
			e.idle.Add(-1)
			return
		case <-idle:
			e.idle.Add(-1)
			if w.c != nil && w.c.ping(e.cfg.keepAlive, e.cfg.timeout) != nil {
				w.c.close()
				w.c = nil
			}
			timer.Reset(keepAliveIdle)
		case tk := <-e.tokens:
			e.idle.Add(-1)
			w.do(tk)
			tk.rec.finished.Add(1)
			if timer != nil {
				timer.Reset(keepAliveIdle)
			}
		}
	}
}

// do sends one request for tk and records its outcome.
func (w *openWorker) do(tk token) {
	e := w.e
	sh := tk.rec.shard(w.id)
	req := w.src.Next()
	if time.Since(tk.intended) > e.cfg.timeout {
		// So far behind that the request would have timed out before it
		// was even sent: count it, do not send it.
		sh.record(sample{op: req.Op, target: w.target(), class: classDropped, latency: -1, service: -1, lag: -1})
		w.src.Done(req, 0, nil)
		return
	}
	var keep *[]byte
	if req.WantBody {
		keep = bodyPool.Get().(*[]byte)
		defer bodyPool.Put(keep)
	}
	for attempt := 0; ; attempt++ {
		fresh := false
		if w.c == nil {
			c, err := e.d.dial(e.ctx, w.id)
			if err != nil {
				sh.record(sample{op: req.Op, target: e.d.target(w.id), class: classConnect, latency: -1, service: -1, lag: time.Since(tk.intended)})
				w.src.Done(req, 0, nil)
				return
			}
			w.c, fresh = c, true
		}
		c := w.c
		c.acquire()
		sent := time.Now()
		writeRequest(c.bw, c.ep.host, req)
		err := c.flush(true)
		writing := err != nil
		var resp response
		if err == nil {
			c.deadline = sent.Add(e.cfg.timeout)
			_ = c.nc.SetReadDeadline(c.deadline)
			resp, err = readResponse(c.br, req.Method, keep)
		}
		if err != nil {
			c.close()
			w.c = nil
			if !fresh && attempt == 0 && staleConn(err) {
				e.d.reconnect.Add(1)
				continue // the server closed the idle connection: retry once
			}
			sh.record(sample{op: req.Op, target: c.target, class: classify(err, writing), latency: -1, service: -1, lag: sent.Sub(tk.intended)})
			w.src.Done(req, 0, nil)
			return
		}
		end := time.Now()
		sh.record(sample{
			op:      req.Op,
			target:  c.target,
			class:   statusClass(resp.status),
			status:  resp.status,
			latency: end.Sub(tk.intended),
			service: end.Sub(sent),
			lag:     max(0, sent.Sub(tk.intended)),
			busy:    tk.busy,

			retryAfter: resp.retryAfter,
		})
		w.src.Done(req, resp.status, resp.body)
		if resp.close {
			c.close()
			w.c = nil
		} else {
			c.served++
			c.release()
		}
		return
	}
}

// target is the endpoint index of the worker's connection (of its slot
// when it has none).
func (w *openWorker) target() int {
	if w.c != nil {
		return w.c.target
	}
	return w.e.d.target(w.id)
}

// finished/unsent bookkeeping lives on the recorder so that a held pool can
// serve several runs (the --find-max steps) each with its own recorder.
type runCounters struct {
	finished atomic.Int64 // tokens taken and handled by a worker
	unsent   int64        // tokens left in the queue at the end (dropped)
}

// sleepUntil blocks the calling thread in nanosleep until t (in slices of
// at most 10 ms, so that a cancelled ctx is noticed); it reports whether t
// was reached.
func sleepUntil(ctx context.Context, t time.Time) bool {
	for {
		if ctx.Err() != nil {
			return false
		}
		d := time.Until(t)
		if d <= 20*time.Microsecond {
			return true
		}
		ts := syscall.NsecToTimespec(int64(min(d, 10*time.Millisecond)))
		_ = syscall.Nanosleep(&ts, nil) // EINTR: loop
	}
}
