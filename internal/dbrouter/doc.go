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
// Every read says what it may use with an explicit Route: ReplicaAllowed
// (the endpoint's rollout switch) and a Consistency (Strong,
// ReadYourWrites(token) or AnyReplica). Read runs the caller's function on
// the node that fits, hands it a postgres.Querier, and retries it once on the
// primary if a replica fails with a connection error. Writes go to Primary()
// or InTx; NormalizeCommitLSN turns the position a write read after its
// commit into a read-your-writes token (CommitLSN reads one anew). Errors
// meaning "the primary cannot serve now" wrap postgres.ErrUnavailable (the
// router classifies with postgres.Classify). See docs/routing.md.
package dbrouter
