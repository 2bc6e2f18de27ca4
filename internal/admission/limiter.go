package admission

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Reason is why a request was not admitted (Admitted: it was).
type Reason uint8

const (
	Admitted     Reason = iota
	ShedLimit           // the limit was reached and the request could not queue
	ShedQueue           // it queued and its wait bound passed first
	ShedDeadline        // its deadline left less time than the baseline needs
)

var reasonNames = [...]string{"admitted", "limit", "queue", "deadline"}

func (r Reason) String() string { return reasonNames[r] }

// Outcome is what a finished request says about the capacity.
type Outcome uint8

const (
	// Ignore: the request says nothing about capacity (a 4xx, a client that
	// left, a panic).
	Ignore Outcome = iota
	// Success: it was served; its service time is a sample.
	Success
	// Drop: it failed for want of capacity (the pool's wait bound, its
	// deadline): the limit backs off.
	Drop
)

// Config are a limiter's settings; zero values take the defaults named.
type Config struct {
	Initial int // starting limit (default 40: twice a pool's connections)
	Min     int // floor (default 4)
	Max     int // ceiling (default 80: 4× a pool of 20)

	Window     time.Duration // how often the limit moves (default 250 ms)
	MinSamples int           // successes a window needs to move it up (default 20)
	// Tolerance is how much slower than the baseline the p90 may be before
	// the limit stops growing (default 2).
	Tolerance float64
	// LatencyFloor is a p90 that never shrinks the limit, however far above
	// the baseline: where the database, the server and
	// their clients share CPUs, every request slows as the throughput rises
	// whatever the concurrency, and a limit that chased the no-load latency
	// would shed load the server could serve well within its SLO (default
	// 100 ms: the history SLO is a p95 of 350 ms at the client).
	LatencyFloor time.Duration
	// MaxLatency is a p90 that backs the limit off whatever the baseline
	// (default 200 ms).
	MaxLatency time.Duration
	Backoff    float64 // multiplicative decrease on a drop (default 0.9)
	// FloorResetWindows at Min forget the baseline (default 5).
	FloorResetWindows int

	QueueInterval     time.Duration // a queue that has not drained for this long stands (default 100 ms)
	QueueWait         time.Duration // wait bound while the queue drains, FIFO (default 5 ms)
	QueueStandingWait time.Duration // wait bound while it stands, LIFO (default 5 ms)

	// Now is the clock (default time.Now); tests pass a fake one.
	Now func() time.Time
}

func (c *Config) defaults() {
	setInt := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	setDur := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	setInt(&c.Min, 4)
	setInt(&c.Max, 80)
	setInt(&c.Initial, 40)
	setInt(&c.MinSamples, 20)
	setInt(&c.FloorResetWindows, 5)
	setDur(&c.Window, 250*time.Millisecond)
	setDur(&c.MaxLatency, 200*time.Millisecond)
	setDur(&c.LatencyFloor, 100*time.Millisecond)
	setDur(&c.QueueInterval, 100*time.Millisecond)
	setDur(&c.QueueWait, 5*time.Millisecond)
	setDur(&c.QueueStandingWait, 5*time.Millisecond)
	if c.Tolerance <= 0 {
		c.Tolerance = 2
	}
	if c.Backoff <= 0 || c.Backoff >= 1 {
		c.Backoff = 0.9
	}
	c.Max = max(c.Max, c.Min)
	c.Initial = min(max(c.Initial, c.Min), c.Max)
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Limiter is one class's adaptive concurrency limit and queue. It is safe
// for concurrent use.
type Limiter struct {
	cfg Config

	mu        sync.Mutex
	limit     float64
	inflight  int
	queue     []*waiter
	lastEmpty time.Time // the last time the queue was seen empty

	// the current window
	winStart    time.Time
	lat         latencyHist
	drops       int
	arrivals    int // admissions in the window
	sumInflight int // in flight found by those admissions, summed
	peak        int // most in flight during the window

	baseline time.Duration
	atFloor  int

	// published for metrics, readable without the lock
	pubLimit, pubInflight, pubQueued atomic.Int64
	pubBaseline                      atomic.Int64
}

type waiter struct {
	ready    chan bool // true: admitted (the permit was handed over); false: shed
	enqueued time.Time
	expires  time.Time
}

// New returns a limiter with cfg's settings.
func New(cfg Config) *Limiter {
	cfg.defaults()
	now := cfg.Now()
	l := &Limiter{cfg: cfg, limit: float64(cfg.Initial), winStart: now, lastEmpty: now}
	l.publish()
	return l
}

// Stats is a snapshot of the limiter.
type Stats struct {
	Limit    int           // the current limit
	InFlight int           // admitted requests not yet released
	Queued   int           // requests waiting in the queue
	Baseline time.Duration // the no-load p90 service time (0: not learnt yet)
}

// Stats returns the limiter's state without taking its lock.
func (l *Limiter) Stats() Stats {
	return Stats{Limit: int(l.pubLimit.Load()), InFlight: int(l.pubInflight.Load()),
		Queued: int(l.pubQueued.Load()), Baseline: time.Duration(l.pubBaseline.Load())}
}

func (l *Limiter) publish() {
	l.pubLimit.Store(int64(l.cap()))
	l.pubInflight.Store(int64(l.inflight))
	l.pubQueued.Store(int64(len(l.queue)))
	l.pubBaseline.Store(int64(l.baseline))
}

// cap is the limit as a whole number of permits.
func (l *Limiter) cap() int { return int(l.limit) }

// Permit is an admitted request's claim; Release it exactly once (in a
// defer). The zero Permit's Release does nothing.
type Permit struct {
	l     *Limiter
	start time.Time
}

// Decision is what Acquire decided.
type Decision struct {
	Reason Reason
	// Queued says the request waited in the queue; Waited is how long.
	Queued bool
	Waited time.Duration
}

// Acquire admits a request of this class or sheds it. A sheddable request
// is admitted only below 90 % of the limit and never queues. A request that
// finds the limit reached queues (see the package doc) unless its context's
// deadline is too close; Acquire returns when it is admitted or shed (or ctx
// ends: shed, with reason deadline or queue). When the decision is not
// Admitted the permit is the zero Permit.
func (l *Limiter) Acquire(ctx context.Context, sheddable bool) (Permit, Decision) {
	now := l.cfg.Now()
	deadline, hasDeadline := ctx.Deadline()
	l.mu.Lock()
	if hasDeadline && l.baseline > 0 && deadline.Sub(now) < l.baseline {
		l.mu.Unlock()
		return Permit{}, Decision{Reason: ShedDeadline}
	}
	if len(l.queue) == 0 {
		l.lastEmpty = now
		free := l.inflight < l.cap()
		if sheddable {
			free = float64(l.inflight) < 0.9*l.limit
		}
		if free {
			p := l.admitLocked(now)
			l.mu.Unlock()
			return p, Decision{Reason: Admitted}
		}
	}
	if sheddable || len(l.queue) >= l.cap() {
		l.mu.Unlock()
		return Permit{}, Decision{Reason: ShedLimit}
	}
	wait := l.cfg.QueueWait
	if len(l.queue) > 0 && now.Sub(l.lastEmpty) > l.cfg.QueueInterval {
		wait = l.cfg.QueueStandingWait
	}
	if hasDeadline {
		if left := deadline.Sub(now) - l.baseline; left < wait {
			wait = left
		}
		if wait <= 0 {
			l.mu.Unlock()
			return Permit{}, Decision{Reason: ShedDeadline}
		}
	}
	w := &waiter{ready: make(chan bool, 1), enqueued: now, expires: now.Add(wait)}
	l.queue = append(l.queue, w)
	l.pubQueued.Store(int64(len(l.queue)))
	l.mu.Unlock()

	t := time.NewTimer(wait)
	defer t.Stop()
	reason := ShedQueue
	select {
	case ok := <-w.ready:
		return l.queued(w, ok, now, ShedQueue)
	case <-t.C:
	case <-ctx.Done():
		if ctx.Err() == context.DeadlineExceeded {
			reason = ShedDeadline
		}
	}
	l.mu.Lock()
	removed := l.removeLocked(w, l.cfg.Now())
	l.mu.Unlock()
	if removed {
		return Permit{}, Decision{Reason: reason, Queued: true, Waited: l.cfg.Now().Sub(now)}
	}
	// Handed a permit (or refused) while the timer fired: take the answer.
	return l.queued(w, <-w.ready, now, reason)
}

// queued turns a waiter's answer into the decision.
func (l *Limiter) queued(w *waiter, ok bool, since time.Time, reason Reason) (Permit, Decision) {
	now := l.cfg.Now()
	d := Decision{Reason: reason, Queued: true, Waited: now.Sub(since)}
	if !ok {
		return Permit{}, d
	}
	d.Reason = Admitted
	return Permit{l: l, start: now}, d
}

// admitLocked takes a permit.
func (l *Limiter) admitLocked(now time.Time) Permit {
	l.arrivals++
	l.sumInflight += l.inflight
	l.inflight++
	l.peak = max(l.peak, l.inflight)
	l.pubInflight.Store(int64(l.inflight))
	return Permit{l: l, start: now}
}

// removeLocked takes w out of the queue; false when it was no longer there
// (it has been answered).
func (l *Limiter) removeLocked(w *waiter, now time.Time) bool {
	for i, q := range l.queue {
		if q == w {
			copy(l.queue[i:], l.queue[i+1:])
			l.queue[len(l.queue)-1] = nil
			l.queue = l.queue[:len(l.queue)-1]
			if len(l.queue) == 0 {
				l.lastEmpty = now
			}
			l.pubQueued.Store(int64(len(l.queue)))
			return true
		}
	}
	return false
}

// popLocked takes the next waiter to serve: the oldest while the queue
// drains (FIFO), the newest while it stands (LIFO).
func (l *Limiter) popLocked(now time.Time) *waiter {
	var w *waiter
	if now.Sub(l.lastEmpty) > l.cfg.QueueInterval {
		w = l.queue[len(l.queue)-1]
		l.queue[len(l.queue)-1] = nil
		l.queue = l.queue[:len(l.queue)-1]
	} else {
		w = l.queue[0]
		copy(l.queue, l.queue[1:])
		l.queue[len(l.queue)-1] = nil
		l.queue = l.queue[:len(l.queue)-1]
	}
	if len(l.queue) == 0 {
		l.lastEmpty = now
	}
	return w
}

// handOverLocked gives free permits to waiters while the limit allows;
// waiters past their wait bound are refused on the way, and once the queue
// stands, so are the oldest waiters that have waited longer than a standing
// queue's bound (they came while it drained, with a longer one, and LIFO
// would serve them last: better told now than at their bound).
func (l *Limiter) handOverLocked(now time.Time) {
	if len(l.queue) > 0 && now.Sub(l.lastEmpty) > l.cfg.QueueInterval {
		n := 0
		for n < len(l.queue) && now.Sub(l.queue[n].enqueued) > l.cfg.QueueStandingWait {
			l.queue[n].ready <- false
			n++
		}
		if n > 0 {
			copy(l.queue, l.queue[n:])
			clear(l.queue[len(l.queue)-n:])
			l.queue = l.queue[:len(l.queue)-n]
			if len(l.queue) == 0 {
				l.lastEmpty = now
			}
		}
	}
	for len(l.queue) > 0 && l.inflight < l.cap() {
		w := l.popLocked(now)
		if now.After(w.expires) {
			w.ready <- false
			continue
		}
		l.admitLocked(now)
		// The waiter's Permit starts when it wakes; count it from here.
		w.ready <- true
	}
	l.pubQueued.Store(int64(len(l.queue)))
}

// Release ends the request of the permit with its outcome, hands the permit
// to a waiter or frees it, and moves the limit at the end of a window.
func (p Permit) Release(o Outcome) {
	l := p.l
	if l == nil {
		return
	}
	now := l.cfg.Now()
	l.mu.Lock()
	switch o {
	case Success:
		l.lat.add(now.Sub(p.start))
	case Drop:
		l.drops++
	}
	l.inflight--
	if now.Sub(l.winStart) >= l.cfg.Window {
		l.updateLocked(now)
	}
	l.handOverLocked(now)
	l.publish()
	l.mu.Unlock()
}

// updateLocked ends the window: the limit and the baseline move (package
// doc), and a new window starts.
func (l *Limiter) updateLocked(now time.Time) {
	n, p90 := l.lat.n, l.lat.quantile(0.9)
	if n < l.cfg.MinSamples && l.drops == 0 {
		return // too few samples to say anything: the window goes on
	}
	drops, peak := l.drops, l.peak
	meanInflight := 0.0
	if l.arrivals > 0 {
		meanInflight = float64(l.sumInflight) / float64(l.arrivals)
	}
	l.winStart, l.drops, l.arrivals, l.sumInflight, l.peak = now, 0, 0, 0, l.inflight
	l.lat.reset()

	old := l.limit
	cfg := &l.cfg
	switch {
	case drops > 0 || p90 > cfg.MaxLatency:
		l.limit = old * cfg.Backoff
	default:
		if l.baseline == 0 {
			l.baseline = p90
		} else if meanInflight < old/2 {
			l.baseline += time.Duration(0.2 * float64(p90-l.baseline))
		}
		target := max(time.Duration(cfg.Tolerance*float64(l.baseline)), cfg.LatencyFloor)
		g := float64(target) / float64(max(p90, 1))
		g = min(max(g, 0.5), 1)
		next := 0.8*old + 0.2*(g*old+math.Sqrt(old))
		if next > old && float64(peak) < old/2 {
			next = old // no demand for more
		}
		l.limit = next
	}
	l.limit = min(max(l.limit, float64(cfg.Min)), float64(cfg.Max))
	if l.cap() <= cfg.Min+1 { // the gradient only nears the floor
		l.atFloor++
		if l.atFloor >= cfg.FloorResetWindows {
			l.baseline, l.atFloor = 0, 0
		}
	} else {
		l.atFloor = 0
	}
}
