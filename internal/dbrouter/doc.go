// Package dbrouter routes Parley's database reads between the primary and
// its streaming replicas, lag-aware and with read-your-writes.
//
// A Router owns a pool for the primary (direct, or through PgBouncer in
// transaction pooling with the "exec" query mode) and one per replica, plus
// one prober per node. Probers measure each replica off the request path
// (replay position, pause state, lag in bytes and in seconds against a ring
// of primary WAL samples) and drive a circuit breaker per replica. Routing
// reads only the probers' latest snapshots (atomics); it never queries lag.
//
// A request says what it may read through its context: WithReplicaAllowed
// (the endpoint's rollout switch) and WithConsistency (Strong,
// ReadYourWrites(token) or AnyReplica). Read runs the caller's function on
// the node that fits and retries it once on the primary if a replica fails
// with a connection error. Writes go to Primary() or InTx; CommitLSN after a
// commit gives the read-your-writes token. Errors meaning "the primary cannot
// serve now" wrap ErrUnavailable. See docs/routing.md.
package dbrouter
