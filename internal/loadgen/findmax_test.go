package loadgen

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// The search must converge on the server's capacity, measured by the server
// in the same run. The server handles one request at a time, 10 ms each:
// its capacity C is the requests it handled over the time it spent handling
// them (≈ 100/s, less with timer slack and a busy machine). Offered above C
// for a 1 s step, its queue grows by (offered − C) requests a second, so the
// p95 gate of 100 ms (ten service times) fails above ≈ 1.1 C: a passing step
// above that, a capacity above it, or a search that stops without a failing
// step within 10 % above the capacity (the generator as the bottleneck, the
// step budget spent) fails the test. Noise only slows the server, which C
// accounts for; a capacity below C/2 means the search did not find it.
func TestFindMax(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var busy time.Duration
	var handled int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		start := time.Now()
		time.Sleep(10 * time.Millisecond)
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
	t.Logf("found %.1f req/s; the server's capacity %.1f req/s; steps %+v; warnings %v", c, capacity, sr.Steps, sr.Warnings)
	if c < capacity/2 || c > 1.1*capacity {
		t.Errorf("capacity found %.1f req/s, the server's is %.1f: want between %.1f and %.1f", c, capacity, capacity/2, 1.1*capacity)
	}
	if !sr.Passed || len(sr.Stages) != len(sr.Steps) {
		t.Errorf("passed %v, %d stage marks for %d steps", sr.Passed, len(sr.Stages), len(sr.Steps))
	}
	var lowestFail float64
	for _, st := range sr.Steps {
		if st.GeneratorBound {
			t.Errorf("step at %.1f req/s: the generator was the bottleneck, not the server", st.OfferedRPS)
		}
		if st.Passed && st.OfferedRPS > 1.1*capacity {
			t.Errorf("step at %.1f req/s passed, over 1.1 × the server's capacity %.1f", st.OfferedRPS, capacity)
		}
		if !st.Passed && st.OfferedRPS > c && (lowestFail == 0 || st.OfferedRPS < lowestFail) {
			lowestFail = st.OfferedRPS
		}
	}
	if lowestFail == 0 || lowestFail > 1.1*c {
		t.Errorf("the search stopped without converging: lowest failing step above the capacity %.1f is %.1f (want within 10 %%)", c, lowestFail)
	}
}
