package admission

import (
	"context"
	"sync"
	"testing"
	"time"
)

// fakeClock is the limiters' clock in these tests: time moves only when the
// test says so.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *fakeClock) advance(d time.Duration) { c.set(c.Now().Add(d)) }

// phase is a stretch of scripted load: demand clients in a closed loop (each
// sends its next request as soon as the last one is done, as long as the
// limit lets it in), every request taking latency, or failing as a drop.
type phase struct {
	demand  int
	latency time.Duration
	drop    bool
	length  time.Duration
}

// sim drives a limiter through phases on the fake clock, one event at a
// time: a request finishes (Release), and the freed client asks again
// (Acquire), so that every arrival finds the others in flight, as real
// traffic does.
type sim struct {
	l      *Limiter
	clk    *fakeClock
	active []slot
}

type slot struct {
	p    Permit
	done time.Time
}

func newSim(cfg Config) *sim {
	clk := newClock()
	cfg.Now = clk.Now
	return &sim{l: New(cfg), clk: clk}
}

func (s *sim) run(t *testing.T, ph phase) {
	t.Helper()
	end := s.clk.Now().Add(ph.length)
	ctx := context.Background()
	topUp := func() {
		for len(s.active) < ph.demand && s.l.Stats().InFlight < s.l.Stats().Limit {
			p, d := s.l.Acquire(ctx, false)
			if d.Reason != Admitted {
				t.Fatalf("below the limit, Acquire shed the request: %v", d.Reason)
			}
			s.active = append(s.active, slot{p: p, done: s.clk.Now().Add(ph.latency)})
		}
	}
	topUp()
	for {
		// the earliest completion
		i := -1
		for j := range s.active {
			if i < 0 || s.active[j].done.Before(s.active[i].done) {
				i = j
			}
		}
		if i < 0 {
			s.clk.set(end)
			return
		}
		if s.active[i].done.After(end) {
			s.clk.set(end)
			// what is still running finishes in the next phase, as scripted here
			return
		}
		s.clk.set(s.active[i].done)
		o := Success
		if ph.drop {
			o = Drop
		}
		s.active[i].p.Release(o)
		s.active = append(s.active[:i], s.active[i+1:]...)
		topUp()
	}
}

func TestLimitAdapts(t *testing.T) {
	const ms = time.Millisecond
	light := func(d time.Duration) phase { return phase{demand: 5, latency: 10 * ms, length: d} }
	saturated := func(lat, d time.Duration) phase { return phase{demand: 1000, latency: lat, length: d} }
	tests := []struct {
		name   string
		phases []phase
		check  func(t *testing.T, s Stats)
	}{
		{
			name:   "no demand: the limit stays",
			phases: []phase{light(5 * time.Second)},
			check: func(t *testing.T, s Stats) {
				if s.Limit != 40 {
					t.Errorf("limit %d, want the initial 40", s.Limit)
				}
				if s.Baseline < 9*ms || s.Baseline > 11*ms {
					t.Errorf("baseline %v, want ≈ 10ms", s.Baseline)
				}
			},
		},
		{
			name:   "grows while the latency stays at the baseline",
			phases: []phase{light(2 * time.Second), saturated(10*ms, 5*time.Second)},
			check: func(t *testing.T, s Stats) {
				if s.Limit < 55 {
					t.Errorf("limit %d after 5 s of demand at the baseline latency, want ≥ 55", s.Limit)
				}
			},
		},
		{
			name:   "grows up to the ceiling, not beyond",
			phases: []phase{light(time.Second), saturated(10*ms, 30*time.Second)},
			check: func(t *testing.T, s Stats) {
				if s.Limit != 80 {
					t.Errorf("limit %d, want the ceiling 80", s.Limit)
				}
			},
		},
		{
			name:   "shrinks when the latency rises over the target",
			phases: []phase{light(2 * time.Second), saturated(190*ms, 5*time.Second)},
			check: func(t *testing.T, s Stats) {
				if s.Limit > 25 {
					t.Errorf("limit %d after 5 s at 1.9× the target (100 ms), want ≤ 25", s.Limit)
				}
			},
		},
		{
			name:   "a p90 over twice the baseline but under the latency floor does not shrink it",
			phases: []phase{light(2 * time.Second), saturated(80*ms, 3*time.Second)},
			check: func(t *testing.T, s Stats) {
				if s.Limit < 40 {
					t.Errorf("limit %d at 8× the baseline and under 100 ms, want it not to shrink", s.Limit)
				}
			},
		},
		{
			name:   "settles just above the target",
			phases: []phase{light(2 * time.Second), saturated(120*ms, 30*time.Second)},
			check: func(t *testing.T, s Stats) {
				// g = 100/120: L → 1/(1−g)² = 36
				if s.Limit < 30 || s.Limit > 42 {
					t.Errorf("limit %d at 1.2× the target, want ≈ 36", s.Limit)
				}
			},
		},
		{
			name:   "backs off on a p90 over the latency bound",
			phases: []phase{saturated(300*ms, 3*time.Second)},
			check: func(t *testing.T, s Stats) {
				if s.Limit > 25 {
					t.Errorf("limit %d after 3 s at p90 300 ms, want ≤ 25", s.Limit)
				}
			},
		},
		{
			name:   "backs off on drops",
			phases: []phase{light(time.Second), {demand: 1000, latency: 10 * ms, drop: true, length: 5 * time.Second}},
			check: func(t *testing.T, s Stats) {
				if s.Limit != 4 {
					t.Errorf("limit %d after 5 s of drops, want the floor 4", s.Limit)
				}
			},
		},
		{
			name: "recovers when the latency comes back",
			phases: []phase{light(2 * time.Second), saturated(190*ms, 5*time.Second),
				saturated(10*ms, 10*time.Second)},
			check: func(t *testing.T, s Stats) {
				if s.Limit < 50 {
					t.Errorf("limit %d 10 s after the latency came back, want ≥ 50", s.Limit)
				}
			},
		},
		{
			name:   "a database that stays 180 ms slower: the baseline is learnt again at the floor",
			phases: []phase{light(2 * time.Second), saturated(190*ms, 40*time.Second)},
			check: func(t *testing.T, s Stats) {
				if s.Baseline < 170*ms {
					t.Errorf("baseline %v, want it relearnt near 190ms", s.Baseline)
				}
				if s.Limit < 20 {
					t.Errorf("limit %d 40 s into the slower database, want it back ≥ 20", s.Limit)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(Config{})
			for _, ph := range tt.phases {
				s.run(t, ph)
			}
			tt.check(t, s.l.Stats())
		})
	}
}

// queueFixture is a limiter fixed at 4 permits, all taken (one of them
// held by the test), so that every Acquire queues (at most 4 waiters).
type queueFixture struct {
	t    *testing.T
	l    *Limiter
	clk  *fakeClock
	held Permit
	out  chan string
}

func newQueueFixture(t *testing.T, cfg Config) *queueFixture {
	clk := newClock()
	cfg.Initial, cfg.Min, cfg.Max, cfg.Now = 4, 4, 4, clk.Now
	f := &queueFixture{t: t, l: New(cfg), clk: clk, out: make(chan string, 10)}
	for range 4 {
		var d Decision
		if f.held, d = f.l.Acquire(context.Background(), false); d.Reason != Admitted {
			t.Fatal("a permit below the limit refused")
		}
	}
	return f
}

// enqueue starts a request named name that queues, and waits until it is in
// the queue; its decision arrives on f.out as "name:reason".
func (f *queueFixture) enqueue(ctx context.Context, name string) {
	f.t.Helper()
	before := f.l.Stats().Queued
	go func() {
		p, d := f.l.Acquire(ctx, false)
		f.out <- name + ":" + d.Reason.String()
		if d.Reason == Admitted {
			p.Release(Ignore)
		}
	}()
	for deadline := time.Now().Add(5 * time.Second); f.l.Stats().Queued == before; {
		if time.Now().After(deadline) {
			f.t.Fatalf("%s never queued", name)
		}
		time.Sleep(time.Millisecond)
	}
}

func (f *queueFixture) next() string {
	f.t.Helper()
	select {
	case s := <-f.out:
		return s
	case <-time.After(5 * time.Second):
		f.t.Fatal("no decision")
		return ""
	}
}

func TestQueueDiscipline(t *testing.T) {
	long := Config{QueueWait: time.Minute, QueueStandingWait: time.Minute}
	t.Run("FIFO while the queue drains", func(t *testing.T) {
		f := newQueueFixture(t, long)
		for _, n := range []string{"a", "b", "c"} {
			f.enqueue(context.Background(), n)
		}
		f.clk.advance(10 * time.Millisecond) // within the 100 ms interval
		f.held.Release(Ignore)
		if got := f.next(); got != "a:admitted" {
			t.Errorf("got %s, want the oldest (a) admitted", got)
		}
	})
	t.Run("LIFO once a queue stands", func(t *testing.T) {
		f := newQueueFixture(t, long)
		for _, n := range []string{"a", "b", "c"} {
			f.enqueue(context.Background(), n)
		}
		f.clk.advance(150 * time.Millisecond) // not drained for over 100 ms
		f.held.Release(Ignore)
		if got := f.next(); got != "c:admitted" {
			t.Errorf("got %s, want the newest (c) admitted", got)
		}
	})
	t.Run("a standing queue bounds new waits short", func(t *testing.T) {
		f := newQueueFixture(t, Config{QueueWait: time.Minute, QueueStandingWait: time.Millisecond})
		f.enqueue(context.Background(), "a")
		f.clk.advance(150 * time.Millisecond)
		// b meets a standing queue: a 1 ms bound
		if _, d := f.l.Acquire(context.Background(), false); d.Reason != ShedQueue || !d.Queued {
			t.Errorf("decision %+v, want b queued, then shed after its short wait", d)
		}
	})
	t.Run("waiters past their bound are refused at hand-over", func(t *testing.T) {
		f := newQueueFixture(t, Config{QueueWait: 10 * time.Second, QueueStandingWait: time.Minute, QueueInterval: time.Hour})
		f.enqueue(context.Background(), "a") // expires at +10 s on the fake clock
		f.clk.advance(6 * time.Second)
		f.enqueue(context.Background(), "b") // expires at +16 s
		f.clk.advance(5 * time.Second)
		f.held.Release(Ignore)
		got := map[string]bool{f.next(): true, f.next(): true}
		if !got["a:queue"] || !got["b:admitted"] {
			t.Errorf("got %v, want a refused (expired) and b admitted", got)
		}
	})
	t.Run("once a queue stands, its old waiters are refused at the next hand-over", func(t *testing.T) {
		f := newQueueFixture(t, Config{QueueWait: time.Minute, QueueStandingWait: time.Second})
		f.enqueue(context.Background(), "a") // a draining queue's bound: a minute
		f.clk.advance(2 * time.Second)       // the queue stands; a has waited 2 s
		f.enqueue(context.Background(), "c") // a standing queue's bound: 1 s
		f.held.Release(Ignore)
		got := map[string]bool{f.next(): true, f.next(): true}
		if !got["a:queue"] || !got["c:admitted"] {
			t.Errorf("got %v, want a refused (older than a standing queue's bound) and c admitted", got)
		}
	})
	t.Run("a full queue sheds at once", func(t *testing.T) {
		f := newQueueFixture(t, long)
		for _, n := range []string{"a", "b", "c", "d"} {
			f.enqueue(context.Background(), n)
		}
		_, d := f.l.Acquire(context.Background(), false) // the queue holds at most the limit (4)
		if d.Reason != ShedLimit || d.Queued {
			t.Errorf("decision %+v, want shed (limit) without queueing", d)
		}
	})
	t.Run("sheddable requests never queue", func(t *testing.T) {
		f := newQueueFixture(t, long)
		_, d := f.l.Acquire(context.Background(), true)
		if d.Reason != ShedLimit || d.Queued {
			t.Errorf("decision %+v, want shed (limit) without queueing", d)
		}
	})
	t.Run("a cancelled waiter leaves the queue", func(t *testing.T) {
		f := newQueueFixture(t, long)
		ctx, cancel := context.WithCancel(context.Background())
		f.enqueue(ctx, "a")
		cancel()
		if got := f.next(); got != "a:queue" {
			t.Errorf("got %s, want a shed", got)
		}
		if q := f.l.Stats().Queued; q != 0 {
			t.Errorf("%d still queued", q)
		}
	})
}

func TestSheddableBelowNinetyPercent(t *testing.T) {
	clk := newClock()
	l := New(Config{Initial: 10, Min: 10, Max: 10, Now: clk.Now})
	for range 9 {
		if _, d := l.Acquire(context.Background(), false); d.Reason != Admitted {
			t.Fatal("refused below the limit")
		}
	}
	if _, d := l.Acquire(context.Background(), true); d.Reason != ShedLimit {
		t.Errorf("sheddable at 9 of 10 in flight: %v, want shed", d.Reason)
	}
	if _, d := l.Acquire(context.Background(), false); d.Reason != Admitted {
		t.Errorf("ordinary at 9 of 10 in flight: %v, want admitted", d.Reason)
	}
}

func TestDeadlineShorterThanBaseline(t *testing.T) {
	s := newSim(Config{})
	s.run(t, phase{demand: 5, latency: 10 * time.Millisecond, length: time.Second})
	if s.l.Stats().Baseline == 0 {
		t.Fatal("no baseline learnt")
	}
	ctx, cancel := context.WithDeadline(context.Background(), s.clk.Now().Add(5*time.Millisecond))
	defer cancel()
	if _, d := s.l.Acquire(ctx, false); d.Reason != ShedDeadline {
		t.Errorf("5 ms left with a 10 ms baseline: %v, want shed (deadline)", d.Reason)
	}
	ctx2, cancel2 := context.WithDeadline(context.Background(), s.clk.Now().Add(time.Second))
	defer cancel2()
	p, d := s.l.Acquire(ctx2, false)
	if d.Reason != Admitted {
		t.Errorf("1 s left: %v, want admitted", d.Reason)
	}
	p.Release(Ignore)
}

func TestQuantile(t *testing.T) {
	var h latencyHist
	for i := 1; i <= 100; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.9, 90 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		got := h.quantile(c.q)
		if got < c.want*88/100 || got > c.want*112/100 {
			t.Errorf("q%.2f = %v, want %v within the buckets' 12.5%%", c.q, got, c.want)
		}
	}
	h.reset()
	if h.quantile(0.9) != 0 {
		t.Error("an empty histogram's quantile is not 0")
	}
	if b := bucketOf(500 * time.Second); b != histBuckets-1 {
		t.Errorf("500 s in bucket %d, want the last", b)
	}
}
