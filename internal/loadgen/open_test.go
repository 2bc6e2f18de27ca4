package loadgen

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// The open model sends exactly rate × duration requests on schedule.
func TestOpenExactCount(t *testing.T) {
	t.Parallel()
	srv := newRawServer(t, time.Millisecond)
	sr := runURLTest(t, Options{URL: srv.url(), Rate: 200, Duration: 2 * time.Second, Connections: 20})
	if sr.Requests != 400 || srv.requests.Load() != 400 || sr.Errors != 0 {
		t.Errorf("requests: generator %d, server %d, errors %d; want 400, 400, 0", sr.Requests, srv.requests.Load(), sr.Errors)
	}
	if sr.OfferedRPS == nil || *sr.OfferedRPS != 200 {
		t.Errorf("offered_rps = %v, want 200", sr.OfferedRPS)
	}
	if sr.SendLag == nil || sr.SendLag.Offered != 400 || sr.SendLag.Dropped != 0 {
		t.Errorf("send lag = %+v", sr.SendLag)
	}
	if sr.Connections.Established != 20 || srv.conns.Load() != 20 {
		t.Errorf("connections: report %+v, server %d; want 20 held", sr.Connections, srv.conns.Load())
	}
}

// A rate ramp offers the area under the ramp: the schedule's intended send
// times per second (exact, whatever the machine's load) and the run's total.
// The run's per-second timeline counts sends when the scheduler reaches
// them, so a saturated machine shifts it: it is logged, not checked.
func TestOpenRateRamp(t *testing.T) {
	t.Parallel()
	stages := []Stage{
		{Duration: 0, Connections: -1, Rate: 0},
		{Duration: 2 * time.Second, Connections: -1, Rate: 200}, // 0 → 200/s: 200 requests
		{Duration: time.Second, Connections: -1, Rate: 200},     // 200 more
	}
	prof, err := newProfile(stages, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	var perSecond [3]int
	n := 0
	for at, ok := prof.advance(0, 0.5); ok && at < prof.total; at, ok = prof.advance(at, 1) {
		perSecond[int(at/time.Second)]++
		n++
	}
	// ∫ of 100·t over [0,1], [1,2], [2,3] with 200/s held: 50, 150, 200.
	if want := [3]int{50, 150, 200}; n != 400 || perSecond != want {
		t.Errorf("intended sends per second = %v (%d in all), want %v", perSecond, n, want)
	}

	srv := newRawServer(t, 0)
	sr := runURLTest(t, Options{URL: srv.url(), Connections: 10, Stages: stages})
	if math.Abs(float64(sr.Requests)-400) > 3 || sr.Errors != 0 {
		t.Errorf("requests = %d (errors %d), want ≈ 400", sr.Requests, sr.Errors)
	}
	t.Logf("offered per second as the scheduler reached the sends: %v", offered(sr.Timeline))
}

func offered(tl []Interval) []float64 {
	var out []float64
	for _, iv := range tl {
		out = append(out, iv.OfferedRPS)
	}
	return out
}

// With too few connections for the offered rate, sends go out late and,
// past the timeout, are dropped; both are counted, and latency keeps
// counting from the intended send time.
func TestOpenLateAndDroppedAreReported(t *testing.T) {
	t.Parallel()
	srv := newStallServer(t, 50*time.Millisecond, 0, 0)
	sr := runURLTest(t, Options{URL: srv.URL + "/", Rate: 100, Duration: time.Second, Connections: 1, Timeout: 300 * time.Millisecond})
	if sr.SendLag == nil || sr.SendLag.Late == 0 || sr.SendLag.Dropped == 0 {
		t.Fatalf("send lag = %+v, want late and dropped sends", sr.SendLag)
	}
	if sr.ErrorsByClass["dropped"] != sr.SendLag.Dropped || sr.Requests != 100 {
		t.Errorf("dropped %d, errors %v, requests %d: dropped sends must count as errors of the 100 offered",
			sr.SendLag.Dropped, sr.ErrorsByClass, sr.Requests)
	}
	if sr.LatencyMs.Max < 200 {
		t.Errorf("max latency %.1fms: queueing behind the busy connection must show", sr.LatencyMs.Max)
	}
	joined := strings.Join(sr.Warnings, "\n")
	if !strings.Contains(joined, "late") || !strings.Contains(joined, "dropped") {
		t.Errorf("warnings do not mention late and dropped sends: %q", joined)
	}
}

// The stall test. The server stops answering for S = 1 s during a T = 5 s
// constant-rate run. Open model: the requests intended during the stall —
// a fraction S/T of all — wait for its end, so their latencies spread
// uniformly over 0..S, and P(latency > x) = (S − x)/T for x in [0, S]:
// p99 = S − 0.01·T = 950 ms, p95 = S − 0.05·T = 750 ms, p90 = 500 ms.
// Closed model, same stall: only the few requests in flight wait, the
// generator sends nothing meanwhile, and p99 stays at the service time.
func TestStallOpenSeesItClosedMissesIt(t *testing.T) {
	t.Parallel()
	const (
		T = 5 * time.Second
		S = time.Second
	)
	t.Run("open", func(t *testing.T) {
		t.Parallel()
		want := map[string]float64{
			"p99": (S - T/100).Seconds() * 1000,
			"p95": (S - T/20).Seconds() * 1000,
			"p90": (S - T/10).Seconds() * 1000,
		}
		// The machine is shared: a burst of other work can stretch the
		// stall's end (the server and the generator drain the queued
		// requests late), so a run off the theory is repeated once, and the
		// test fails only when both are off.
		var problems []string
		for attempt := 1; attempt <= 2; attempt++ {
			srv := newStallServer(t, 0, 2*time.Second, S)
			sr := runURLTest(t, Options{URL: srv.URL + "/", Rate: 200, Duration: T, Connections: 250})
			if sr.Errors != 0 {
				t.Fatalf("errors: %v", sr.ErrorsByClass)
			}
			got := map[string]float64{"p99": sr.LatencyMs.P99, "p95": sr.LatencyMs.P95, "p90": sr.LatencyMs.P90}
			problems = problems[:0]
			for k, w := range want {
				if math.Abs(got[k]-w) > 0.15*w {
					problems = append(problems, fmt.Sprintf("open %s = %.1fms, theory %.1fms (±15%%)", k, got[k], w))
				}
			}
			if sr.LatencyMs.P50 > 50 {
				problems = append(problems, fmt.Sprintf("open p50 = %.1fms: the 80%% of requests outside the stall should be fast", sr.LatencyMs.P50))
			}
			t.Logf("open, run %d: %+v", attempt, sr.LatencyMs)
			if len(problems) == 0 {
				break
			}
		}
		for _, p := range problems {
			t.Error(p)
		}
	})
	t.Run("closed", func(t *testing.T) {
		t.Parallel()
		srv := newStallServer(t, 2*time.Millisecond, 2*time.Second, S)
		sr := runURLTest(t, Options{URL: srv.URL + "/", Closed: true, Connections: 10, Duration: T})
		if sr.Errors != 0 {
			t.Fatalf("errors: %v", sr.ErrorsByClass)
		}
		// Missing the stall: each of the 10 connections waits it out once,
		// so fewer than 1 % of the requests saw it and the p99 is a request
		// that did not, far from the stall's S (a stalled one takes ≥ S).
		// The bound separates the two kinds, not fast from slow: the
		// requests that did not stall took 2 ms plus whatever the shared
		// machine adds (p99 118 ms at load average 11).
		if sr.LatencyMs.P99 > (S/2).Seconds()*1000 {
			t.Errorf("closed p99 = %.1fms, not under half the %v stall; the closed model should miss the stall (that is the point)", sr.LatencyMs.P99, S)
		}
		if sr.LatencyMs.Max < 500 {
			t.Errorf("closed max = %.1fms; the stalled requests in flight should still show in max", sr.LatencyMs.Max)
		}
		t.Logf("closed: %+v over %d requests", sr.LatencyMs, sr.Requests)
	})
}

// An interrupted run reports what it did over the time it ran.
func TestOpenInterrupted(t *testing.T) {
	t.Parallel()
	srv := newRawServer(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	rep, err := Run(ctx, Options{URL: srv.url(), Rate: 100, Duration: 10 * time.Second, Connections: 5, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	sr := rep.Scenarios[0]
	if sr.DurationS < 1 || sr.DurationS > 2 || sr.RPS < 70 || sr.RPS > 130 || sr.Errors != 0 {
		t.Errorf("interrupted after ≈1.2 s: duration %.2fs, rps %.1f, errors %d", sr.DurationS, sr.RPS, sr.Errors)
	}
}
