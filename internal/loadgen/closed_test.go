package loadgen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

func runURLTest(t *testing.T, o Options) *ScenarioReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	o.Seed = 1
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(rep.Scenarios) != 1 {
		t.Fatalf("got %d scenario reports, want 1", len(rep.Scenarios))
	}
	return rep.Scenarios[0]
}

// Every request the generator counts is one the server answered, and
// pipelining keeps exactly P requests outstanding per connection.
func TestClosedPipeliningDepthAndExactCounts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		conns, p   int
		chunked    bool
		closeEvery int
	}{
		{name: "no pipelining", conns: 3, p: 1},
		{name: "depth 8", conns: 2, p: 8},
		{name: "depth 4 chunked", conns: 2, p: 4, chunked: true},
		{name: "depth 4 with Connection: close every 5th", conns: 2, p: 4, closeEvery: 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newRawServer(t, 3*time.Millisecond)
			srv.chunked = tc.chunked
			srv.closeEvery = tc.closeEvery
			sr := runURLTest(t, Options{URL: srv.url(), Closed: true, Connections: tc.conns, Pipelining: tc.p, Duration: 700 * time.Millisecond})
			if sr.Errors != 0 {
				t.Errorf("errors = %d (%v), want 0", sr.Errors, sr.ErrorsByClass)
			}
			if got, want := sr.Requests, srv.responses.Load(); got != want || got == 0 {
				t.Errorf("generator counted %d requests, server answered %d", got, want)
			}
			if sr.StatusCodes["200"] != sr.Requests {
				t.Errorf("status 200 × %d, want %d", sr.StatusCodes["200"], sr.Requests)
			}
			if tc.closeEvery == 0 {
				if got := srv.requests.Load(); got != sr.Requests {
					t.Errorf("server read %d requests, generator counted %d", got, sr.Requests)
				}
				if got := srv.maxOutstanding.Load(); got != int64(tc.p) {
					t.Errorf("server saw at most %d requests outstanding on a connection, want exactly %d", got, tc.p)
				}
			} else {
				// Requests the server never answered are re-sent on a new
				// connection, not lost and not errors.
				if sr.Connections.Established < 1 || srv.conns.Load() <= int64(tc.conns) {
					t.Errorf("server saw %d connections; want reconnects after Connection: close", srv.conns.Load())
				}
			}
			if sr.Connections.Requested != tc.conns || sr.Connections.Established != int64(tc.conns) && tc.closeEvery == 0 {
				t.Errorf("connections = %+v, want %d requested and established", sr.Connections, tc.conns)
			}
		})
	}
}

// A server with a fixed 10 ms delay, timed by the server itself: what the
// generator reports must agree with what the server measured in the same
// run, without bounds that depend on how busy the machine is. Each request's
// latency includes its time in the handler, so every quantile of the
// generator's latencies is at least the server's; in the closed model each
// connection has one request at a time, so throughput × mean latency cannot
// exceed the connections (Little's law); in the open model a latency is its
// send lag plus its service time, and the service time includes the
// handler's.
func TestFixedDelayLatency(t *testing.T) {
	t.Parallel()
	for _, closed := range []bool{true, false} {
		name := "open"
		if closed {
			name = "closed"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := newTimedServer(t, 10*time.Millisecond)
			o := Options{URL: srv.URL + "/", Connections: 4, Duration: time.Second}
			if closed {
				o.Closed = true
				o.Pipelining = 1
			} else {
				o.Rate = 100
				o.Connections = 10
			}
			sr := runURLTest(t, o)
			if sr.Errors != 0 {
				t.Fatalf("errors: %v", sr.ErrorsByClass)
			}
			handler := srv.latency()
			t.Logf("generator: %d requests, %.1f/s, latency %+v; server: %d handled, in the handler p50 %.3fms max %.3fms",
				sr.Requests, sr.RPS, sr.LatencyMs, srv.handled(), handler.P50, handler.Max)
			// HdrHistogram keeps three significant digits: 0.1 % either way.
			const res = 1.002
			if sr.LatencyMs.P50*res < handler.P50 || sr.LatencyMs.Max*res < handler.Max {
				t.Errorf("latency p50 %.3fms max %.3fms, below the server's own time in the handler (p50 %.3fms max %.3fms)",
					sr.LatencyMs.P50, sr.LatencyMs.Max, handler.P50, handler.Max)
			}
			if sr.LatencyMs.P99 < sr.LatencyMs.P50 || sr.LatencyMs.Max < sr.LatencyMs.P99 {
				t.Errorf("percentiles out of order: %+v", sr.LatencyMs)
			}
			if closed {
				// A request finishing after the last full second may count:
				// one per connection at most, well under 5 %.
				if busy := sr.RPS * sr.LatencyMs.Mean / 1000; busy > float64(o.Connections)*1.05 {
					t.Errorf("%.1f req/s × mean latency %.3fms = %.2f requests in flight on average, more than the %d connections allow",
						sr.RPS, sr.LatencyMs.Mean, busy, o.Connections)
				}
				return
			}
			svc, lag := sr.ServiceTimeMs, sr.SendLag
			if svc == nil || lag == nil {
				t.Fatal("open-model report without service time or send lag")
			}
			if svc.P50*res < handler.P50 || sr.LatencyMs.P50 < svc.P50 || sr.LatencyMs.Max < svc.Max {
				t.Errorf("service time %+v: below the handler's (p50 %.3fms) or above the latency %+v", *svc, handler.P50, sr.LatencyMs)
			}
			if sr.LatencyMs.Max > (lag.Max+svc.Max)*res {
				t.Errorf("latency max %.3fms over send lag max %.3fms + service time max %.3fms", sr.LatencyMs.Max, lag.Max, svc.Max)
			}
		})
	}
}

// timedServer answers every request after delay and records how long each
// spent in its handler.
type timedServer struct {
	*httptest.Server
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func newTimedServer(t *testing.T, delay time.Duration) *timedServer {
	t.Helper()
	s := &timedServer{h: newHist()}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		time.Sleep(delay)
		d := time.Since(start)
		s.mu.Lock()
		recordDur(s.h, d)
		s.mu.Unlock()
		w.Header().Set("Content-Length", "2")
		w.Write([]byte("ok"))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *timedServer) latency() Latency {
	s.mu.Lock()
	defer s.mu.Unlock()
	return latencyOf(s.h)
}

func (s *timedServer) handled() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.h.TotalCount()
}

// Connection stages ramp the closed model's connections.
func TestClosedConnectionStages(t *testing.T) {
	t.Parallel()
	srv := newRawServer(t, time.Millisecond)
	sr := runURLTest(t, Options{URL: srv.url(), Closed: true, Stages: []Stage{
		{Duration: 500 * time.Millisecond, Connections: 2, Rate: -1},
		{Duration: 500 * time.Millisecond, Connections: 6, Rate: -1},
		{Duration: 300 * time.Millisecond, Connections: 6, Rate: -1},
	}})
	if sr.Connections.Requested != 6 || sr.Connections.Established != 6 {
		t.Errorf("connections = %+v, want 6 requested and established", sr.Connections)
	}
	if len(sr.Stages) != 3 || sr.Stages[1].Start != 0.5 {
		t.Errorf("stage marks = %+v", sr.Stages)
	}
	if srv.conns.Load() != 6 {
		t.Errorf("server saw %d connections, want 6", srv.conns.Load())
	}
}

// Connection failures are counted as connect errors, not hidden.
func TestConnectErrors(t *testing.T) {
	t.Parallel()
	srv := newRawServer(t, 0)
	addr := srv.url()
	srv.ln.Close() // nothing listens any more
	sr := runURLTest(t, Options{URL: addr, Closed: true, Connections: 2, Duration: 300 * time.Millisecond})
	if sr.Errors == 0 || sr.ErrorsByClass["connect"] != sr.Errors {
		t.Errorf("errors = %d by class %v, want only connect errors", sr.Errors, sr.ErrorsByClass)
	}
	if sr.Connections.Established != 0 || sr.Connections.Failed == 0 {
		t.Errorf("connections = %+v, want 0 established and failed dials", sr.Connections)
	}
}
