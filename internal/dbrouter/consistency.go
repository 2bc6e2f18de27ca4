package dbrouter

import "github.com/parley-chat/parley/internal/wal"

// Route is what a read may use, passed to Read by its caller: whether a
// replica may serve it at all (the endpoint's rollout switch) and, if so,
// which replicas are fresh enough (Consistency). The zero Route reads from
// the primary.
type Route struct {
	Consistency    Consistency
	ReplicaAllowed bool
}

// Consistency says which nodes may serve a read. The zero value is
// AnyReplica.
type Consistency struct {
	mode  consistencyMode
	token wal.LSN
}

type consistencyMode uint8

const (
	modeAny consistencyMode = iota
	modeStrong
	modeToken
	modeUnknown
)

var (
	// AnyReplica lets any replica whose breaker is closed serve the read.
	AnyReplica = Consistency{mode: modeAny}
	// Strong sends the read to the primary (X-Consistency: strong).
	Strong = Consistency{mode: modeStrong}
	// PositionUnknown sends a read that may use a replica to the primary
	// because the position it must reflect — the caller's last write — is
	// not known (the store of tokens cannot say): any replica may be behind
	// it. Counted with reason token_unknown, and bounded like spill-over.
	PositionUnknown = Consistency{mode: modeUnknown}
)

// ReadYourWrites lets a replica serve the read only if it has replayed the
// WAL up to token (the commit position of the caller's last write);
// otherwise the primary serves it. A zero token is AnyReplica; wal.Unknown
// is never replayed, so it keeps the read on the primary.
func ReadYourWrites(token wal.LSN) Consistency {
	if token == 0 {
		return AnyReplica
	}
	return Consistency{mode: modeToken, token: token}
}

// Token is the read-your-writes token (0 unless made by ReadYourWrites).
func (c Consistency) Token() wal.LSN { return c.token }

// String names the mode: "any_replica", "strong", "read_your_writes" or
// "position_unknown".
func (c Consistency) String() string {
	switch c.mode {
	case modeStrong:
		return "strong"
	case modeToken:
		return "read_your_writes"
	case modeUnknown:
		return "position_unknown"
	}
	return "any_replica"
}
