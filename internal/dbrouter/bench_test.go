package dbrouter

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/internal/wal"
)

// benchRouter is a Router with n closed replicas and no database: enough for
// the routing decision, which reads only the replicas' views.
func benchRouter(n int) *Router {
	r := &Router{metrics: newMetrics()}
	for i := range n {
		rep := &replica{node: &node{name: "replica" + string(rune('1'+i))}, br: newBreaker(2, 3)}
		rep.view.Store(&replicaView{breaker: BreakerClosed, replay: 1000, state: StateHealthy})
		r.replicas = append(r.replicas, rep)
	}
	return r
}

// BenchmarkRouteDecision is the router's per-read overhead without the
// database: the choice among 2 replicas with a
// read-your-writes token, and the parley_db_reads_total increment.
func BenchmarkRouteDecision(b *testing.B) {
	r := benchRouter(2)
	route := Route{Consistency: ReadYourWrites(900), ReplicaAllowed: true}
	b.ReportAllocs()
	for b.Loop() {
		rep, reason, _ := r.pick(route)
		target := TargetPrimary
		if rep != nil {
			target = TargetReplica
		}
		r.metrics.read("message_history", target, reason)
	}
}

func BenchmarkRouteDecisionParallel(b *testing.B) {
	r := benchRouter(2)
	route := Route{Consistency: ReadYourWrites(900), ReplicaAllowed: true}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rep, reason, _ := r.pick(route)
			target := TargetPrimary
			if rep != nil {
				target = TargetReplica
			}
			r.metrics.read("message_history", target, reason)
		}
	})
}

func TestPickDecision(t *testing.T) {
	r := benchRouter(2)
	allowed := Route{ReplicaAllowed: true}
	tests := []struct {
		name       string
		route      Route
		setup      func()
		wantNil    bool
		wantReason string
	}{
		{"any replica", allowed, nil, false, ReasonOK},
		{"token replayed", Route{Consistency: ReadYourWrites(1000), ReplicaAllowed: true}, nil, false, ReasonOK},
		{"token ahead: a replica, checked", Route{Consistency: ReadYourWrites(1001), ReplicaAllowed: true}, nil, false, ReasonTokenAhead},
		{"token unknown", Route{Consistency: ReadYourWrites(wal.Unknown), ReplicaAllowed: true}, nil, true, ReasonTokenAhead},
		{"strong", Route{Consistency: Strong, ReplicaAllowed: true}, nil, true, ReasonStrong},
		{"writer's position unknown", Route{Consistency: PositionUnknown, ReplicaAllowed: true}, nil, true, ReasonTokenUnknown},
		{"position unknown, replica not allowed", Route{Consistency: PositionUnknown}, nil, true, ReasonDisabled},
		{"not allowed", Route{}, nil, true, ReasonDisabled},
		{"one replica open, other serves", allowed, func() {
			r.replicas[0].view.Store(&replicaView{breaker: BreakerOpen})
		}, false, ReasonOK},
		{"all open", allowed, func() {
			r.replicas[1].view.Store(&replicaView{breaker: BreakerHalfOpen})
		}, true, ReasonNoHealthyReplica},
	}
	for _, tt := range tests {
		if tt.setup != nil {
			tt.setup()
		}
		rep, reason, _ := r.pick(tt.route)
		if (rep == nil) != tt.wantNil || reason != tt.wantReason {
			t.Errorf("%s: pick = %v, %s; want nil %v, %s", tt.name, rep, reason, tt.wantNil, tt.wantReason)
		}
	}
	if rep, reason, _ := (&Router{}).pick(allowed); rep != nil || reason != ReasonDisabled {
		t.Errorf("no replicas configured: %v %s", rep, reason)
	}
}

func TestPickBalancesByInFlight(t *testing.T) {
	r := benchRouter(3)
	route := Route{ReplicaAllowed: true}
	r.replicas[0].inFlight.Store(5)
	r.replicas[1].inFlight.Store(1)
	r.replicas[2].inFlight.Store(3)
	for range 10 {
		if rep, _, _ := r.pick(route); rep != r.replicas[1] {
			t.Fatalf("picked %s, want the least loaded replica2", rep.name)
		}
	}
	// Equal load: round-robin spreads the reads.
	for _, rep := range r.replicas {
		rep.inFlight.Store(0)
	}
	seen := map[string]int{}
	for range 30 {
		rep, _, _ := r.pick(route)
		seen[rep.name]++
	}
	if len(seen) != 3 {
		t.Errorf("equal load went to %v, want all 3 replicas", seen)
	}
}

// TestPickPerReplicaToken: each replica's own replay position answers a
// read-your-writes token, whatever the load: a replica that has replayed it
// serves even when it is busier; none that has: the primary (token_ahead);
// an open breaker excludes a replica that has replayed it.
func TestPickPerReplicaToken(t *testing.T) {
	r := benchRouter(2)
	r.replicas[0].view.Store(&replicaView{breaker: BreakerClosed, replay: 1000, state: StateHealthy})
	r.replicas[1].view.Store(&replicaView{breaker: BreakerClosed, replay: 2000, state: StateHealthy})
	r.replicas[1].inFlight.Store(7)
	tok := Route{Consistency: ReadYourWrites(1500), ReplicaAllowed: true}
	for range 10 {
		if rep, reason, _ := r.pick(tok); rep != r.replicas[1] || reason != ReasonOK {
			t.Fatalf("token 1500: picked %v (%s), want replica2, the only one that has replayed it", rep, reason)
		}
	}
	if rep, _, _ := r.pick(Route{ReplicaAllowed: true}); rep != r.replicas[0] {
		t.Fatalf("no token: picked %v, want the idle replica1", rep)
	}
	// Ahead of every probe: the most advanced replica, checked in the
	// read's round trip (gated), token_ahead if it is still behind.
	if rep, reason, gated := r.pick(Route{Consistency: ReadYourWrites(2001), ReplicaAllowed: true}); rep != r.replicas[1] || reason != ReasonTokenAhead || !gated {
		t.Fatalf("token ahead of both: %v %s gated %v; want replica2 (the furthest), checked", rep, reason, gated)
	}
	if rep, reason, gated := r.pick(Route{Consistency: ReadYourWrites(wal.Unknown), ReplicaAllowed: true}); rep != nil || reason != ReasonTokenAhead || gated {
		t.Fatalf("unknown token: %v %s gated %v; want the primary", rep, reason, gated)
	}
	r.cfg.NoPositionCheck = true
	if rep, reason, _ := r.pick(Route{Consistency: ReadYourWrites(2001), ReplicaAllowed: true}); rep != nil || reason != ReasonTokenAhead {
		t.Fatalf("token ahead of both, no position check: %v %s; want the primary", rep, reason)
	}
	r.cfg.NoPositionCheck = false
	r.replicas[1].view.Store(&replicaView{breaker: BreakerOpen, replay: 2000, state: StatePaused})
	if rep, reason, gated := r.pick(tok); rep != r.replicas[0] || reason != ReasonTokenAhead || !gated {
		t.Fatalf("replica2 open, replica1 behind: %v %s gated %v, want replica1 checked (token_ahead if behind)", rep, reason, gated)
	}
	// Ties rotate: equal load spreads evenly.
	r.replicas[1].view.Store(&replicaView{breaker: BreakerClosed, replay: 2000, state: StateHealthy})
	r.replicas[1].inFlight.Store(0)
	seen := map[*replica]int{}
	for range 100 {
		rep, _, _ := r.pick(Route{ReplicaAllowed: true})
		seen[rep]++
	}
	if seen[r.replicas[0]] != 50 || seen[r.replicas[1]] != 50 {
		t.Fatalf("100 reads at equal load: %d and %d, want 50 each", seen[r.replicas[0]], seen[r.replicas[1]])
	}
}

// BenchmarkAcquireTracer is what every pool Acquire pays on top of pgxpool:
// the wait bound (a context with a deadline) and the histogram observation.
func BenchmarkAcquireTracer(b *testing.B) {
	m := newMetrics()
	tr := &acquireTracer{bound: DefaultAcquireTimeout, hist: m.acquire.WithLabelValues("primary")}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c := tr.TraceAcquireStart(ctx, nil, pgxpool.TraceAcquireStartData{})
		tr.TraceAcquireEnd(c, nil, pgxpool.TraceAcquireEndData{})
	}
}
