package loadgen

import (
	"math"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds from 1 µs to 100 s with three
// significant digits (HdrHistogram's usual setting); longer ones clamp.
const histMaxMicros = int64(100 * time.Second / time.Microsecond)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, histMaxMicros, 3) }

func recordDur(h *hdrhistogram.Histogram, d time.Duration) {
	us := d.Microseconds()
	if us < 1 {
		us = 1
	}
	if us > histMaxMicros {
		us = histMaxMicros
	}
	_ = h.RecordValue(us) // in range by construction
}

// recorder collects the samples of one timed run. Connections record into
// shards (one HdrHistogram set per shard, each shared by a group of
// connections behind its own mutex, so a 10k-connection run does not hold 10k
// histograms); once a second the collector merges the shards into the
// interval and cumulative histograms.
type recorder struct {
	ops    []string
	ntgt   int // targets (endpoints); per-target totals are kept when > 1
	shards []*shard
	start  time.Time

	offered atomic.Int64 // intended sends so far (open model)
	runCounters

	// collector state, only touched by tick/finish (one goroutine)
	cum        []opTotals
	cumTargets []opTotals              // per target (ntgt > 1)
	service    *hdrhistogram.Histogram // open model: write to response end
	lag        *hdrhistogram.Histogram // open model: intended to write
	statuses   map[int]int64
	late       int64
	lateBusy   int64
	timeline   []Interval
	lastTick   time.Time
	lastCPU    time.Duration
	lastOffer  int64
	startCPU   time.Duration
	interval   *hdrhistogram.Histogram
	intervalSL *hdrhistogram.Histogram
	intervalOK *hdrhistogram.Histogram
	outcomes   outcomeHists
}

// outcomeHists split the latency of answered requests by outcome: the
// successes (1xx–3xx, latency as everywhere) and the 503s (a server that
// sheds load answers them at once, and its admitted requests must still
// meet the SLO; their time is from the actual send in the open model: how
// fast the server answered), and count the 503s that came without
// Retry-After.
type outcomeHists struct {
	ok, unavailable *hdrhistogram.Histogram
	noRetryAfter    int64
}

func newOutcomeHists() outcomeHists {
	return outcomeHists{ok: newHist(), unavailable: newHist()}
}

type opTotals struct {
	hist     *hdrhistogram.Histogram
	requests int64
	errors   int64
	classes  [numClasses]int64
}

type shard struct {
	mu       sync.Mutex
	ops      []opTotals
	targets  []opTotals // per target (nil with one target)
	service  *hdrhistogram.Histogram
	lag      *hdrhistogram.Histogram
	statuses map[int]int64
	late     int64
	lateBusy int64 // late sends that had waited for a free connection
	outcomes outcomeHists
}

// lateThreshold is how far behind its intended time a send may start before
// it is counted as late.
const lateThreshold = 10 * time.Millisecond

// newRecorder records the operations ops against targets endpoints.
func newRecorder(ops []string, targets int) *recorder {
	n := 4 * runtime.GOMAXPROCS(0)
	if n > 16 {
		n = 16
	}
	r := &recorder{
		ops:        ops,
		ntgt:       max(targets, 1),
		shards:     make([]*shard, n),
		cum:        make([]opTotals, len(ops)),
		service:    newHist(),
		lag:        newHist(),
		statuses:   map[int]int64{},
		interval:   newHist(),
		intervalSL: newHist(),
		intervalOK: newHist(),
		outcomes:   newOutcomeHists(),
	}
	for i := range r.cum {
		r.cum[i].hist = newHist()
	}
	if r.ntgt > 1 {
		r.cumTargets = newTotals(r.ntgt)
	}
	for i := range r.shards {
		s := &shard{ops: newTotals(len(ops)), statuses: map[int]int64{}}
		if r.ntgt > 1 {
			s.targets = newTotals(r.ntgt)
		}
		s.service = newHist()
		s.lag = newHist()
		s.outcomes = newOutcomeHists()
		r.shards[i] = s
	}
	return r
}

func newTotals(n int) []opTotals {
	out := make([]opTotals, n)
	for i := range out {
		out[i].hist = newHist()
	}
	return out
}

// begin marks the start of the timed part.
func (r *recorder) begin(now time.Time) {
	r.start = now
	r.lastTick = now
	r.startCPU = processCPU()
	r.lastCPU = r.startCPU
}

func (r *recorder) shard(worker int) *shard { return r.shards[worker%len(r.shards)] }

// sample is one finished (or failed) request.
type sample struct {
	op      int
	target  int // the endpoint's index among the targets
	class   errClass
	status  int
	latency time.Duration // < 0: none (no response)
	service time.Duration // < 0: not measured (closed model: equals latency)
	lag     time.Duration // < 0: not measured (closed model)
	busy    bool          // open model: no connection was free when it fell due
	// retryAfter: the response carried Retry-After (checked on 503s)
	retryAfter bool
}

func (s *shard) record(x sample) {
	s.mu.Lock()
	o := &s.ops[x.op]
	o.add(x)
	if s.targets != nil {
		s.targets[x.target].add(x)
	}
	if x.latency >= 0 {
		switch {
		case x.status > 0 && x.status < 400:
			recordDur(s.outcomes.ok, x.latency)
		case x.status == 503:
			// how fast the server said no: from the actual send where
			// known (open model), so that the generator's own lateness
			// is not counted against the server
			d := x.latency
			if x.service >= 0 {
				d = x.service
			}
			recordDur(s.outcomes.unavailable, d)
			if !x.retryAfter {
				s.outcomes.noRetryAfter++
			}
		}
	}
	if x.service >= 0 {
		recordDur(s.service, x.service)
	}
	if x.lag >= 0 {
		recordDur(s.lag, x.lag)
		if x.lag > lateThreshold {
			s.late++
			if x.busy {
				s.lateBusy++
			}
		}
	}
	if x.status > 0 {
		s.statuses[x.status]++
	}
	s.mu.Unlock()
}

func (o *opTotals) add(x sample) {
	o.requests++
	if x.class != classNone {
		o.errors++
		o.classes[x.class]++
	}
	if x.latency >= 0 {
		recordDur(o.hist, x.latency)
	}
}

// fold moves o's counts into c.
func (o *opTotals) fold(c *opTotals) {
	if o.requests == 0 {
		return
	}
	c.hist.Merge(o.hist)
	o.hist.Reset()
	c.requests += o.requests
	c.errors += o.errors
	for k := range o.classes {
		c.classes[k] += o.classes[k]
	}
	o.requests, o.errors, o.classes = 0, 0, [numClasses]int64{}
}

// Interval is one second of the timeline.
type Interval struct {
	T           float64 `json:"t"`        // seconds since the timed part began (end of interval)
	Requests    int64   `json:"requests"` // finished requests, errors included
	Errors      int64   `json:"errors"`
	RPS         float64 `json:"rps"` // successful responses per second
	OfferedRPS  float64 `json:"offered_rps,omitempty"`
	P50         float64 `json:"p50_ms"`
	P90         float64 `json:"p90_ms"`
	P99         float64 `json:"p99_ms"`
	Max         float64 `json:"max_ms"`
	Connections int64   `json:"connections"`
	CPUPercent  float64 `json:"cpu_percent"` // generator CPU, percent of one core
	SendLagP99  float64 `json:"send_lag_p99_ms,omitempty"`
	Stage       int     `json:"stage"`
	// OKP95 is the p95 latency of the second's successful responses.
	OKP95 float64 `json:"ok_p95_ms"`
}

// tick folds the shards into the cumulative state and appends one Interval.
func (r *recorder) tick(now time.Time, conns int64, stage int, open bool) Interval {
	r.interval.Reset()
	r.intervalSL.Reset()
	r.intervalOK.Reset()
	var reqs, errs int64
	for _, s := range r.shards {
		s.mu.Lock()
		for i := range s.targets {
			s.targets[i].fold(&r.cumTargets[i])
		}
		for i := range s.ops {
			o := &s.ops[i]
			c := &r.cum[i]
			if o.requests == 0 {
				continue
			}
			r.interval.Merge(o.hist)
			c.hist.Merge(o.hist)
			o.hist.Reset()
			c.requests += o.requests
			c.errors += o.errors
			reqs += o.requests
			errs += o.errors
			for k := range o.classes {
				c.classes[k] += o.classes[k]
			}
			o.requests, o.errors, o.classes = 0, 0, [numClasses]int64{}
		}
		if s.service.TotalCount() > 0 {
			r.service.Merge(s.service)
			s.service.Reset()
		}
		if s.lag.TotalCount() > 0 {
			r.intervalSL.Merge(s.lag)
			r.lag.Merge(s.lag)
			s.lag.Reset()
		}
		for k, v := range s.statuses {
			r.statuses[k] += v
			delete(s.statuses, k)
		}
		if s.outcomes.ok.TotalCount() > 0 {
			r.intervalOK.Merge(s.outcomes.ok)
			r.outcomes.ok.Merge(s.outcomes.ok)
			s.outcomes.ok.Reset()
		}
		if s.outcomes.unavailable.TotalCount() > 0 {
			r.outcomes.unavailable.Merge(s.outcomes.unavailable)
			s.outcomes.unavailable.Reset()
		}
		r.outcomes.noRetryAfter += s.outcomes.noRetryAfter
		s.outcomes.noRetryAfter = 0
		r.late += s.late
		r.lateBusy += s.lateBusy
		s.late, s.lateBusy = 0, 0
		s.mu.Unlock()
	}
	secs := now.Sub(r.lastTick).Seconds()
	if secs <= 0 {
		secs = 1e-9
	}
	cpu := processCPU()
	iv := Interval{
		T:           round3(now.Sub(r.start).Seconds()),
		Requests:    reqs,
		Errors:      errs,
		RPS:         round1(float64(reqs-errs) / secs),
		P50:         ms(r.interval.ValueAtQuantile(50)),
		P90:         ms(r.interval.ValueAtQuantile(90)),
		P99:         ms(r.interval.ValueAtQuantile(99)),
		Max:         ms(r.interval.Max()),
		Connections: conns,
		CPUPercent:  round1(100 * (cpu - r.lastCPU).Seconds() / secs),
		Stage:       stage,
		OKP95:       ms(r.intervalOK.ValueAtQuantile(95)),
	}
	if open {
		off := r.offered.Load()
		iv.OfferedRPS = round1(float64(off-r.lastOffer) / secs)
		r.lastOffer = off
		iv.SendLagP99 = ms(r.intervalSL.ValueAtQuantile(99))
	}
	r.lastTick, r.lastCPU = now, cpu
	r.timeline = append(r.timeline, iv)
	return iv
}

// Totals is the cumulative result of one run (or one operation of it).
type Totals struct {
	Requests  int64
	Errors    int64
	ErrorRate float64 // 0..1
	RPS       float64 // successful responses per second
	Latency   Latency
	Classes   map[string]int64
}

// Latency holds latency percentiles in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	return Latency{
		P50:  ms(h.ValueAtQuantile(50)),
		P90:  ms(h.ValueAtQuantile(90)),
		P95:  ms(h.ValueAtQuantile(95)),
		P99:  ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)),
		Max:  ms(h.Max()),
		Mean: round3(h.Mean() / 1000),
	}
}

func totalsOf(requests, errors int64, classes [numClasses]int64, h *hdrhistogram.Histogram, secs float64) Totals {
	t := Totals{Requests: requests, Errors: errors, Latency: latencyOf(h), Classes: map[string]int64{}}
	if requests > 0 {
		t.ErrorRate = float64(errors) / float64(requests)
	}
	if secs > 0 {
		t.RPS = round1(float64(requests-errors) / secs)
	}
	for k, v := range classes {
		if v > 0 {
			t.Classes[errClass(k).String()] = v
		}
	}
	return t
}

// droppedTotal counts the open model's intended sends that never went out.
func (r *recorder) droppedTotal() int64 {
	n := r.unsent
	for _, c := range r.cum {
		n += c.classes[classDropped]
	}
	return n
}

// overall merges the per-operation totals. Sends left unsent at the end
// belong to no operation; they count here as dropped errors.
func (r *recorder) overall(secs float64) (Totals, *hdrhistogram.Histogram) {
	h := newHist()
	reqs, errs := r.unsent, r.unsent
	var classes [numClasses]int64
	classes[classDropped] = r.unsent
	for _, c := range r.cum {
		h.Merge(c.hist)
		reqs += c.requests
		errs += c.errors
		for k := range c.classes {
			classes[k] += c.classes[k]
		}
	}
	return totalsOf(reqs, errs, classes, h, secs), h
}

func (r *recorder) opTotals(i int, secs float64) Totals {
	c := r.cum[i]
	return totalsOf(c.requests, c.errors, c.classes, c.hist, secs)
}

// targetTotals is target i's share (several targets only).
func (r *recorder) targetTotals(i int, secs float64) Totals {
	c := r.cumTargets[i]
	return totalsOf(c.requests, c.errors, c.classes, c.hist, secs)
}

func (r *recorder) statusCounts() map[string]int64 {
	out := make(map[string]int64, len(r.statuses))
	keys := make([]int, 0, len(r.statuses))
	for k := range r.statuses {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	for _, k := range keys {
		out[strconv.Itoa(k)] = r.statuses[k]
	}
	return out
}

func ms(us int64) float64 { return round3(float64(us) / 1000) }

func round1(f float64) float64 { return math.Round(f*10) / 10 }
func round3(f float64) float64 { return math.Round(f*1000) / 1000 }
