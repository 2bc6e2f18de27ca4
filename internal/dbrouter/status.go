package dbrouter

import (
	"context"
	"fmt"
	"time"

	"github.com/parley-chat/parley/internal/wal"
)

// Replica states (the "state" of /admin/status).
const (
	StateHealthy = "healthy" // answering, not paused, under the lag threshold
	StateLagging = "lagging" // over a lag threshold, or replay stalled
	StatePaused  = "paused"  // WAL replay paused (or pause requested)
	StateDown    = "down"    // the probe failed, or the node is not in recovery
)

// ReplicaStatus is one replica in /admin/status "replicas".
type ReplicaStatus struct {
	Name       string  `json:"name"`
	State      string  `json:"state"` // healthy|lagging|paused|down
	LagBytes   int64   `json:"lag_bytes"`
	LagSeconds float64 `json:"lag_seconds"`
	Breaker    string  `json:"breaker"` // closed|half_open|open
	// Stalled: replay did not advance over a probe interval although WAL
	// was waiting to be replayed (state "lagging").
	Stalled   bool    `json:"stalled,omitempty"`
	ReplayLSN wal.LSN `json:"replay_lsn"`
	InFlight  int64   `json:"in_flight"` // reads running on it now
	// Reads is how many reads it has served (since New): with several
	// replicas, how the router spreads them.
	Reads    int64     `json:"reads"`
	ProbedAt time.Time `json:"probed_at"`
}

// Status returns every replica's latest probe outcome, in configuration
// order. Connection details and error texts are left out (they go to the log).
func (r *Router) Status() []ReplicaStatus {
	out := make([]ReplicaStatus, 0, len(r.replicas))
	for _, rep := range r.replicas {
		s := ReplicaStatus{Name: rep.name, State: StateDown, Breaker: BreakerOpen.String(), InFlight: rep.inFlight.Load(),
			Reads: rep.served.Load()}
		if v := rep.view.Load(); v != nil {
			s.State, s.LagBytes, s.LagSeconds, s.Breaker = v.state, v.lagBytes, v.lagSeconds, v.breaker.String()
			s.Stalled, s.ReplayLSN, s.ProbedAt = v.stalled, v.replay, v.probedAt
		}
		out = append(out, s)
	}
	return out
}

// BestReplicaLSN returns the highest replay position among the replicas
// that serve reads now (breaker closed); ok is false when none does.
func (r *Router) BestReplicaLSN() (lsn wal.LSN, ok bool) {
	for _, rep := range r.replicas {
		if v := rep.view.Load(); v != nil && v.breaker == BreakerClosed && (!ok || v.replay > lsn) {
			lsn, ok = v.replay, true
		}
	}
	return lsn, ok
}

// ReplicaCanServe reports whether some replica that serves reads now has
// replayed up to token (a zero token: whether any replica serves reads). The
// cache layer uses it so as never to fill the cache from a replica behind a
// writer's token.
func (r *Router) ReplicaCanServe(token wal.LSN) bool {
	best, ok := r.BestReplicaLSN()
	return ok && best >= token
}

// PoolStats returns the primary's pool and then each replica's.
func (r *Router) PoolStats() []PoolStat {
	out := make([]PoolStat, 0, 1+len(r.replicas))
	out = append(out, r.primary.stat())
	for _, rep := range r.replicas {
		out = append(out, rep.stat())
	}
	return out
}

// PingReplica checks now, on a pooled connection, that the replica called
// name (as in Status: "replica1", …) answers; for /readyz, which must not
// wait for the next probe. It does not feed the breaker.
func (r *Router) PingReplica(ctx context.Context, name string) error {
	for _, rep := range r.replicas {
		if rep.name == name {
			return rep.pool.Ping(ctx)
		}
	}
	return fmt.Errorf("dbrouter: no replica %q", name)
}
