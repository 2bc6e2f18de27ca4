package loadgen

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// engineConfig is what both load models share.
type engineConfig struct {
	eps             []endpoint    // the targets; connection i goes to eps[i % len(eps)]
	timeout         time.Duration // per request
	dialConcurrency int
	dialTimeout     time.Duration
	pipelining      int      // closed model only
	keepAlive       *Request // open model: sent on held connections idle for keepAliveIdle (nil: none)
	progress        func(p progressInfo)
	log             *slog.Logger
}

// progressInfo is what the live progress line shows.
type progressInfo struct {
	elapsed, total time.Duration
	iv             Interval
	requested      int
}

// runResult is what one timed run of an engine produced.
type runResult struct {
	rec        *recorder
	secs       float64 // the profile's duration (offered rates are divided by it)
	elapsed    float64 // start to the last response (served rates are divided by it)
	open       bool
	requested  int     // most connections the profile asked for
	peak       int64   // most connections established at once
	peakPer    []int64 // the same, per target
	dialFails  int64
	reconnects int64
	schedLag   Latency // open model: scheduler lateness (a generator-health signal)
	dropped    int64   // open model: intended sends never made
	offered    int64   // open model: intended sends
	cpuSecs    float64
	marks      []StageMark
}

// peaks is the dialer's per-target peak connection counts.
func (d *dialer) peaks() []int64 {
	out := make([]int64, len(d.peakPer))
	for i := range d.peakPer {
		out[i] = d.peakPer[i].Load()
	}
	return out
}

// crew runs one goroutine per connection and resizes the set on demand:
// growing starts workers, shrinking closes the stop channels of the newest.
type crew struct {
	mu    sync.Mutex
	stops []chan struct{}
	wg    sync.WaitGroup
	next  int
	start func(id int, stop <-chan struct{}, c *conn)
}

// resize grows or shrinks the crew to n workers. Pre-dialled connections
// from pre are handed to new workers first.
func (c *crew) resize(n int, pre []*conn) []*conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.stops) < n {
		stop := make(chan struct{})
		c.stops = append(c.stops, stop)
		var cn *conn // nil (none pre-dialled, or its dial failed): the worker dials
		if len(pre) > 0 {
			cn, pre = pre[0], pre[1:]
		}
		id := c.next
		c.next++
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.start(id, stop, cn)
		}()
	}
	for len(c.stops) > n {
		last := len(c.stops) - 1
		close(c.stops[last])
		c.stops = c.stops[:last]
	}
	return pre
}

// nextID is the id the next worker started will have (its connection slot).
func (c *crew) nextID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next
}

func (c *crew) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.stops)
}

// stopAll stops every worker and waits for them.
func (c *crew) stopAll() {
	c.resize(0, nil)
	c.wg.Wait()
}

// predial opens n connections, for the slots first … first+n-1 (the ids of
// the workers that will get them), before the clock starts, with bounded
// concurrency, reporting progress to w. Failed dials are counted by the
// dialer and left nil in the returned slice (their workers dial again).
func predial(ctx context.Context, d *dialer, first, n int, timeout time.Duration, w io.Writer, label string) []*conn {
	if n <= 0 {
		return nil
	}
	conns := make([]*conn, n)
	var wg sync.WaitGroup
	jobs := make(chan int)
	workers := min(n, cap(d.sem))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				c, err := d.dialHeld(ctx, timeout, first+i)
				if err == nil {
					conns[i] = c
				}
			}
		}()
	}
	done := make(chan struct{})
	if w != nil && n >= 500 {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					fmt.Fprintf(w, "[%s] connecting: %d/%d established, %d failed\n", label, d.open.Load(), n, d.failures.Load())
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	close(done)
	return conns
}

// waitUntil sleeps until t or ctx ends; it reports whether t was reached.
func waitUntil(ctx context.Context, timer *time.Timer, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	timer.Reset(d)
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		return false
	}
}

// keepAliveIdle is how long a held connection of the open model may stay
// idle before it sends keepAlive (below the usual server idle timeouts:
// Go's 120 s in parley serve, nginx's 75 s).
const keepAliveIdle = 50 * time.Second

// bodyPool holds response-body buffers for requests that want the body, so
// idle connections do not each keep one.
var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// supervise runs a model's run until the profile ends or ctx does: every
// 100 ms it resizes the crew to the profile's connection count (new workers
// dial on their own), and every second it closes an interval of the
// recorder and reports progress. It returns how long the run was timed
// (shorter than the profile when interrupted).
func supervise(ctx context.Context, cfg *engineConfig, d *dialer, c *crew, prof *profile, rec *recorder, start time.Time, open bool) time.Duration {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	nextSecond := start.Add(time.Second)
	for {
		select {
		case <-ctx.Done():
			return min(prof.total, time.Since(start))
		case now := <-tick.C:
			t := now.Sub(start)
			if t >= prof.total {
				return min(prof.total, time.Since(start))
			}
			c.resize(prof.connsAt(t), nil)
			if !now.Before(nextSecond) {
				iv := rec.tick(now, d.open.Load(), prof.stageAt(t), open)
				nextSecond = nextSecond.Add(time.Second)
				if cfg.progress != nil {
					cfg.progress(progressInfo{elapsed: t, total: prof.total, iv: iv, requested: prof.connsAt(t)})
				}
			}
		}
	}
}
