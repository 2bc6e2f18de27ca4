package dbrouter

import "testing"

func TestBreaker(t *testing.T) {
	var (
		healthy = observation{underHalf: true}
		between = observation{}                               // under the threshold, over half of it
		over    = observation{overLag: true}                  // over the lag threshold
		stalled = observation{stalled: true, underHalf: true} // replay frozen with WAL pending
		paused  = observation{paused: true, underHalf: true}  // replay paused
		connErr = observation{connError: true}                // connection-class failure
		timeout = observation{failed: true}                   // probe timed out (not connection-class)
		C, H, O = BreakerClosed, BreakerHalfOpen, BreakerOpen
	)
	tests := []struct {
		name  string
		steps []observation
		want  []BreakerState // state after each step
	}{
		{"starts open, first healthy probe closes at once", []observation{healthy}, []BreakerState{C}},
		{"first probe between half and full threshold is trusted", []observation{between}, []BreakerState{C}},
		{"first probe paused stays open, then hysteresis", []observation{paused, healthy, healthy, healthy}, []BreakerState{O, H, H, C}},
		{"lag opens after k=2 consecutive probes", []observation{healthy, over, over}, []BreakerState{C, C, O}},
		{"a healthy probe in between resets the count", []observation{healthy, over, healthy, over, between, over}, []BreakerState{C, C, C, C, C, C}},
		{"stalled replay opens at once", []observation{healthy, stalled}, []BreakerState{C, O}},
		{"probe timeouts count like lag", []observation{healthy, timeout, timeout}, []BreakerState{C, C, O}},
		{"pause opens at once", []observation{healthy, paused}, []BreakerState{C, O}},
		{"connection error opens at once", []observation{healthy, connErr}, []BreakerState{C, O}},
		{"re-admit after 3 healthy probes under half", []observation{healthy, connErr, healthy, healthy, healthy}, []BreakerState{C, O, H, H, C}},
		{"under the threshold but over half does not re-admit", []observation{healthy, paused, between, between, between}, []BreakerState{C, O, O, O, O}},
		{"half-open reopens on any unhealthy probe", []observation{healthy, paused, healthy, between, healthy, healthy, healthy}, []BreakerState{C, O, H, O, H, H, C}},
		{"half-open reopens on lag", []observation{healthy, paused, healthy, healthy, over}, []BreakerState{C, O, H, H, O}},
		{"stays open while unhealthy", []observation{healthy, connErr, connErr, over, stalled}, []BreakerState{C, O, O, O, O}},
	}
	for _, tt := range tests {
		b := newBreaker(2, 3)
		for i, o := range tt.steps {
			from, to := b.observe(o)
			if to != tt.want[i] {
				t.Errorf("%s: step %d (%+v): state %v, want %v", tt.name, i, o, to, tt.want[i])
				break
			}
			if i > 0 && from != tt.want[i-1] {
				t.Errorf("%s: step %d: from %v, want %v", tt.name, i, from, tt.want[i-1])
			}
		}
	}
}

func TestBreakerUserConnError(t *testing.T) {
	b := newBreaker(2, 3)
	b.observe(observation{underHalf: true})
	if from, to := b.userConnError(); from != BreakerClosed || to != BreakerOpen {
		t.Fatalf("user connection error: %v -> %v, want closed -> open", from, to)
	}
	if from, to := b.userConnError(); from != to {
		t.Fatalf("second user error changed state %v -> %v", from, to)
	}
	// Only probes re-admit it.
	for i, want := range []BreakerState{BreakerHalfOpen, BreakerHalfOpen, BreakerClosed} {
		if _, to := b.observe(observation{underHalf: true}); to != want {
			t.Fatalf("probe %d: %v, want %v", i, to, want)
		}
	}
}

func TestBreakerStateString(t *testing.T) {
	for s, want := range map[BreakerState]string{BreakerClosed: "closed", BreakerHalfOpen: "half_open", BreakerOpen: "open"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
}
