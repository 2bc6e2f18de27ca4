package dbrouter

import "context"

// Consistency says which nodes may serve a read. The zero value is
// AnyReplica.
type Consistency struct {
	mode  consistencyMode
	token LSN
}

type consistencyMode uint8

const (
	modeAny consistencyMode = iota
	modeStrong
	modeToken
)

var (
	// AnyReplica lets any replica whose breaker is closed serve the read.
	AnyReplica = Consistency{mode: modeAny}
	// Strong sends the read to the primary (X-Consistency: strong).
	Strong = Consistency{mode: modeStrong}
)

// ReadYourWrites lets a replica serve the read only if it has replayed the
// WAL up to token (the LSN CommitLSN returned after the caller's last write);
// otherwise the primary serves it. A zero token is AnyReplica.
func ReadYourWrites(token LSN) Consistency {
	if token == 0 {
		return AnyReplica
	}
	return Consistency{mode: modeToken, token: token}
}

// Token is the read-your-writes token (0 unless made by ReadYourWrites).
func (c Consistency) Token() LSN { return c.token }

// String names the mode: "any_replica", "strong" or "read_your_writes".
func (c Consistency) String() string {
	switch c.mode {
	case modeStrong:
		return "strong"
	case modeToken:
		return "read_your_writes"
	}
	return "any_replica"
}

// readOptions is what a request carries for the router, under one context
// key so that routing does a single context lookup.
type readOptions struct {
	consistency    Consistency
	replicaAllowed bool
}

type readOptionsKey struct{}

func optionsFrom(ctx context.Context) readOptions {
	o, _ := ctx.Value(readOptionsKey{}).(readOptions)
	return o
}

// WithConsistency returns ctx carrying the read consistency c. Without it a
// read uses AnyReplica.
func WithConsistency(ctx context.Context, c Consistency) context.Context {
	o := optionsFrom(ctx)
	o.consistency = c
	return context.WithValue(ctx, readOptionsKey{}, o)
}

// WithReplicaAllowed returns ctx saying whether this request may be served by
// a replica at all (the per-endpoint rollout switch decides it per request).
// Without it reads go to the primary (reason "disabled").
func WithReplicaAllowed(ctx context.Context, allowed bool) context.Context {
	o := optionsFrom(ctx)
	o.replicaAllowed = allowed
	return context.WithValue(ctx, readOptionsKey{}, o)
}

// ConsistencyFrom returns the consistency ctx carries (AnyReplica if none).
func ConsistencyFrom(ctx context.Context) Consistency { return optionsFrom(ctx).consistency }

// ReplicaAllowed reports whether ctx allows a replica to serve reads.
func ReplicaAllowed(ctx context.Context) bool { return optionsFrom(ctx).replicaAllowed }
