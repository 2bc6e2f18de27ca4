package loadgen

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A server that serves two requests at a time, 2 ms each (≤ 1000/s, less
// with timer slack): the search must find a capacity below what saturates it
// and above what is comfortably served.
func TestFindMax(t *testing.T) {
	t.Parallel()
	sem := make(chan struct{}, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sem <- struct{}{}
		time.Sleep(2 * time.Millisecond)
		<-sem
		w.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	sr := runURLTest(t, Options{URL: srv.URL + "/", FindMax: true, Rate: 100, Connections: 200,
		StepDuration: time.Second, MaxSteps: 6, Thresholds: []string{"p95<100ms"},
		SchedulerLagLimit: 200 * time.Millisecond}) // -race on a shared machine: only a grossly late scheduler counts
	if sr.CapacityRPS == nil {
		t.Fatal("no capacity_rps")
	}
	c := *sr.CapacityRPS
	t.Logf("capacity %.1f req/s; steps %+v", c, sr.Steps)
	if c < 150 || c > 1000 {
		t.Errorf("capacity %.1f req/s, want between 150 and 1000", c)
	}
	if len(sr.Steps) < 3 || !sr.Passed {
		t.Errorf("%d steps, passed %v", len(sr.Steps), sr.Passed)
	}
	var failedAbove bool
	for _, st := range sr.Steps {
		if st.Passed && st.OfferedRPS > c {
			t.Errorf("step at %.1f passed but capacity is %.1f", st.OfferedRPS, c)
		}
		failedAbove = failedAbove || !st.Passed && st.OfferedRPS > c
	}
	last := sr.Steps[len(sr.Steps)-1]
	switch {
	case last.Passed && last.GeneratorBound:
		// On a busy machine (-race, parallel tests) the generator may be
		// the bottleneck first: the search must stop and say so.
		if !strings.Contains(strings.Join(sr.Warnings, " "), "GENERATOR") {
			t.Errorf("a generator-bound stop without a warning: %v", sr.Warnings)
		}
	case !failedAbove:
		t.Errorf("no failing step above the capacity: the search never found the limit")
	}
	if len(sr.Stages) != len(sr.Steps) {
		t.Errorf("%d stage marks for %d steps", len(sr.Stages), len(sr.Steps))
	}
}
