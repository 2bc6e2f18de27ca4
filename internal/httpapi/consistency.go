package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/cache"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/dbrouter"
	"github.com/parley-chat/parley/internal/monitor"
	"github.com/parley-chat/parley/internal/postgres"
)

// Read consistency (api.md "Read consistency"):
//
//   - X-Consistency: strong — the primary serves the read, the cache is
//     bypassed;
//   - otherwise read-your-writes per user: a replica may serve a read only if
//     it has replayed the user's last write, whose position is the larger of
//     the request's X-Consistency-Token and the token stored for the user
//     after each of their writes (in Redis, so every instance sees it; see
//     userToken for Redis outages). The cache needs no token: every write
//     invalidates it before it is acknowledged (see acknowledge).

// Header names of the consistency contract.
const (
	headerConsistency      = "X-Consistency"
	headerConsistencyToken = "X-Consistency-Token"
	headerReadSource       = "X-Read-Source"
)

// Read sources, the values of X-Read-Source.
const (
	sourcePrimary = dbrouter.TargetPrimary
	sourceReplica = dbrouter.TargetReplica
	sourceCache   = dbrouter.TargetCache
)

// DefaultTokenTTL is how long a user's read-your-writes token is kept after
// their last write. It only has to outlast replication: a replica that falls
// further behind is taken out by its breaker (5 s by default) long before.
const DefaultTokenTTL = time.Minute

// readOptions is what a read request asked for in its headers.
type readOptions struct {
	strong bool         // X-Consistency: strong
	token  dbrouter.LSN // X-Consistency-Token (0: none)
}

// parseReadOptions reads X-Consistency and X-Consistency-Token; a value
// either cannot be is EINVALID.
func parseReadOptions(r *http.Request) (readOptions, error) {
	var o readOptions
	if v := strings.TrimSpace(r.Header.Get(headerConsistency)); v != "" {
		if !strings.EqualFold(v, "strong") {
			return o, chat.Errorf(chat.EINVALID, "%s: %q is not a consistency level; the only one is \"strong\" (leave it out for read-your-writes)", headerConsistency, v)
		}
		o.strong = true
	}
	if v := strings.TrimSpace(r.Header.Get(headerConsistencyToken)); v != "" {
		lsn, err := dbrouter.ParseLSN(v)
		if err != nil {
			return o, chat.Errorf(chat.EINVALID, "%s: %q is not a token; send back the %s header of a write response as it was", headerConsistencyToken, v, headerConsistencyToken)
		}
		o.token = lsn
	}
	return o, nil
}

// userToken returns the position of userID's last write as stored after it
// (0: none within the TTL). primaryOnly says the read must go to the primary:
// Redis cannot say (down, or too slow) and this instance wrote for the user
// within the TTL, so a write through another instance may be newer than
// anything known here (routing.md: "fall back to a local per-instance record
// and, for users with a recent write, the primary"). A user with no local
// record keeps the request's own token only; a client that needs its writes
// through other instances visible during a Redis outage sends
// X-Consistency-Token.
func (s *Server) userToken(ctx context.Context, userID int64) (token dbrouter.LSN, primaryOnly bool) {
	pos, ok, err := s.cache.UserToken(ctx, userID)
	if errors.Is(err, cache.ErrUnavailable) && ok {
		return 0, true
	}
	if !ok {
		return 0, false
	}
	lsn, perr := parsePosition(pos)
	if perr != nil {
		// Not written by this program: be safe.
		s.cfg.Logger.Warn("unreadable read-your-writes token; reading from the primary", "user_id", userID, "token", pos)
		return 0, true
	}
	return lsn, false
}

// parsePosition reads a cache position ("[epoch:]HI/LO") as an LSN. Parley
// stores plain LSNs; an epoch prefix is tolerated and ignored.
func parsePosition(pos string) (dbrouter.LSN, error) {
	if i := strings.LastIndexByte(pos, ':'); i >= 0 {
		pos = pos[i+1:]
	}
	return dbrouter.ParseLSN(pos)
}

// unknownPosition is the token of a write whose position could not be read:
// no replica ever reaches it, so the user's reads stay on the primary until
// the token expires.
const unknownPosition = "FFFFFFFF/FFFFFFFF"

// commitPosition returns the committed write's position as a token ("" when
// unknown): the one recorded on the write's connection, else one read now.
func (s *Server) commitPosition(ctx context.Context, r *http.Request, committed *postgres.CommitPosition) string {
	if s.router == nil {
		return ""
	}
	if committed != nil && committed.LSN != "" {
		if lsn, err := dbrouter.ParseLSN(committed.LSN); err == nil {
			return s.router.NormalizeCommitLSN(lsn).String()
		}
	}
	lsn, err := s.router.CommitLSN(monitor.WithQueryName(ctx, "commit_lsn"))
	if err != nil {
		s.cfg.Logger.Warn("write committed but its position is unknown: the user's reads stay on the primary", "request_id", RequestID(r.Context()), "err", err)
		return ""
	}
	return lsn.String()
}

// routerReader is a Reader on a dbrouter.Router.
type routerReader struct{ r *dbrouter.Router }

func (rr routerReader) Read(ctx context.Context, endpoint string, fn func(ctx context.Context, q postgres.Querier) error) (string, error) {
	return rr.r.Read(ctx, endpoint, func(ctx context.Context, q dbrouter.Querier) error { return fn(ctx, q) })
}

// ackTimeout bounds the work after a commit (position, token, invalidation).
const ackTimeout = 2 * time.Second

// acknowledge runs after a write of userID committed and before it is
// answered: it takes the write's position (the primary's WAL insert position
// read on the write's own connection right after the commit — committed, the
// holder from postgres.WithCommitPosition; else read now through the router),
// raises the user's read-your-writes token to it, runs invalidate with it
// (the cache's duties, whatever the rollout says: a later step of the rollout
// must not find stale entries), and sets X-Consistency-Token. None of it can
// fail the write. A position that cannot be read at all (the primary gone
// right after the commit) must not let the user's next read reach a replica
// that lacks the write: the user's token is raised to the maximum, which
// keeps their reads on the primary until it expires; the invalidation runs
// with an unknown position (fills from the primary only). A Redis outage
// leaves the token on this instance and queues the invalidation.
func (s *Server) acknowledge(w http.ResponseWriter, r *http.Request, userID int64, committed *postgres.CommitPosition, invalidate func(ctx context.Context, pos string)) {
	// The write is committed: finish even if the client has gone.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), ackTimeout)
	defer cancel()
	pos := s.commitPosition(ctx, r, committed)
	if userID != 0 && s.router != nil {
		token := pos
		if token == "" {
			token = unknownPosition
		}
		if err := s.cache.SetUserToken(ctx, userID, token, s.cfg.TokenTTL); err != nil && !errors.Is(err, cache.ErrUnavailable) {
			s.cfg.Logger.Warn("set read-your-writes token", "user_id", userID, "err", err)
		}
	}
	if invalidate != nil {
		invalidate(ctx, pos)
	}
	if pos != "" {
		w.Header().Set(headerConsistencyToken, pos)
	}
}
