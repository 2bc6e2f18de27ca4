package loadgen

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// The search must converge on the server's capacity. The server handles
// one request at a time and holds each for at least 10 ms, so it can never
// serve more than 100 requests a second: offered more for a 1 s step, its
// queue grows by the excess, and the p95 gate of 100 ms (ten service times)
// fails above ≈ 1.1 × 100 — a step passing there, or a capacity found above
// it, is wrong whatever the machine does. It also measures what it really
// served (requests handled over the time spent handling them, ~90/s here,
// less on a busy machine): a capacity found under half of that, or a search
// that stops without a failing step within 10 % above what it found (the
// generator as the bottleneck, the step budget spent), has not found the
// server's capacity.
func TestFindMax(t *testing.T) {
	t.Parallel()
	const service = 10 * time.Millisecond
	limit := float64(time.Second / service)
	var mu sync.Mutex
	var busy time.Duration
	var handled int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		start := time.Now()
		time.Sleep(service)
		busy += time.Since(start)
		handled++
		mu.Unlock()
		w.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	sr := runURLTest(t, Options{URL: srv.URL + "/", FindMax: true, Rate: 60, Connections: 100,
		StepDuration: time.Second, MaxSteps: 8, Thresholds: []string{"p95<100ms"},
		SchedulerLagLimit: 200 * time.Millisecond}) // -race on a shared machine: only a grossly late scheduler counts
	mu.Lock()
	capacity := float64(handled) / busy.Seconds()
	mu.Unlock()
	if sr.CapacityRPS == nil {
		t.Fatal("no capacity_rps")
	}
	c := *sr.CapacityRPS
	t.Logf("found %.1f req/s; the server served %.1f req/s of busy time (at most %.0f); steps %+v; warnings %v", c, capacity, limit, sr.Steps, sr.Warnings)
	if c < capacity/2 || c > 1.1*limit {
		t.Errorf("capacity found %.1f req/s; the server served %.1f and can serve at most %.0f: want between %.1f and %.1f", c, capacity, limit, capacity/2, 1.1*limit)
	}
	if !sr.Passed || len(sr.Stages) != len(sr.Steps) {
		t.Errorf("passed %v, %d stage marks for %d steps", sr.Passed, len(sr.Stages), len(sr.Steps))
	}
	var lowestFail float64
	for _, st := range sr.Steps {
		if st.GeneratorBound {
			t.Errorf("step at %.1f req/s: the generator was the bottleneck, not the server", st.OfferedRPS)
		}
		if st.Passed && st.OfferedRPS > 1.1*limit {
			t.Errorf("step at %.1f req/s passed, over 1.1 × the most the server can serve (%.0f)", st.OfferedRPS, limit)
		}
		if !st.Passed && st.OfferedRPS > c && (lowestFail == 0 || st.OfferedRPS < lowestFail) {
			lowestFail = st.OfferedRPS
		}
	}
	if lowestFail == 0 || lowestFail > 1.1*c {
		t.Errorf("the search stopped without converging: lowest failing step above the capacity %.1f is %.1f (want within 10 %%)", c, lowestFail)
	}
}
