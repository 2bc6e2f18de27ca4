package chatsvc

import (
	"context"

	"github.com/parley-chat/parley/internal/cache"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/dbrouter"
	"github.com/parley-chat/parley/internal/monitor"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/rollout"
	"github.com/parley-chat/parley/internal/wal"
)

// readSpec is one read of a cacheable endpoint (see the package doc).
type readSpec struct {
	rollout  string // the endpoint whose rollout decides (chat.Endpoint*)
	endpoint string // metric label of the router and the cache (chat.Endpoint*)
	query    string // query name for parley_db_query_* (monitor.WithQueryName)
	key      cache.Key
	// conv, when set, says the value is one conversation's and the same for
	// all its members (a history page): it is stored with the member list
	// (packMembers) and checked against the caller on every use, so that a
	// non-member never gets it from the cache.
	conv int64
	// load runs the read on q and returns the response body. It may run
	// twice (a replica, then the primary): it must not keep state between runs.
	load func(ctx context.Context, q postgres.Querier) ([]byte, error)
	// loadShared, with conv: load and the conversation's members (ascending)
	// in one round trip, for a value that is cached or shared.
	loadShared func(ctx context.Context, q postgres.Querier) ([]byte, []int64, error)
}

// decide is the rollout decision for userID on endpoint.
func (s *Service) decide(endpoint string, userID int64) rollout.Decision {
	return s.rollouts.Decide(endpoint, userID)
}

// read serves spec for u: the rollout decision, then the cache or the
// database (route).
func (s *Service) read(ctx context.Context, u chat.User, opts chat.ReadOptions, spec readSpec) (chat.Read, error) {
	ctx, cancel := s.budget(ctx)
	defer cancel()
	d := s.decide(spec.rollout, u.ID)
	out := chat.Read{Cohort: d.Cohort}
	var (
		value []byte
		err   error
	)
	if d.Cache && !opts.Strong {
		var res cache.Result
		value, res, err = s.cache.GetOrFill(ctx, spec.endpoint, spec.key, func(ctx context.Context, f cache.Fill) ([]byte, bool, error) {
			replica, floor := d.Replica, wal.LSN(0)
			if f.Store {
				// Cacheable only from the primary or a replica at the owner's
				// last write: route at that position (primary if unknown).
				if f.MinLSN == wal.Unknown {
					replica = false
				} else {
					floor = f.MinLSN
				}
			}
			v, src, err := s.route(ctx, spec, u.ID, opts, replica, floor, true)
			out.Source = src
			return v, err == nil, err
		})
		if res == cache.ResultHit {
			out.Source = chat.SourceCache
			s.router.RecordRead(spec.endpoint, dbrouter.TargetCache, "hit")
		}
	} else {
		// Nothing is cached or shared: the body alone (the statement checks
		// membership itself).
		value, out.Source, err = s.route(ctx, spec, u.ID, opts, d.Replica, 0, false)
		if err != nil {
			return out, err
		}
		out.Body = value
		return out, nil
	}
	if err != nil {
		return out, err
	}
	body := value
	if spec.conv != 0 {
		var member bool
		if body, member = unpackMembers(value, u.ID); !member {
			// Another member's value (the cache's, or a fill shared in this
			// process): the database decides, and answers a non-member 404.
			if value, out.Source, err = s.route(ctx, spec, u.ID, opts, d.Replica, 0, true); err != nil {
				return out, err
			}
			if body, member = unpackMembers(value, u.ID); !member {
				return out, chat.Errorf(chat.ENOTFOUND, "conversation not found")
			}
		}
	}
	out.Body = body
	return out, nil
}

// route runs spec's read on the database through the router: on a replica
// when replica is true and one has replayed the larger of floor, the
// request's token and the user's stored token; else on the primary. It
// returns the value, where it ran and the error (in the API's terms). With
// shared, a value of one conversation (spec.conv) comes with its member list
// in front (packMembers), read in the same statement (loadShared).
func (s *Service) route(ctx context.Context, spec readSpec, userID int64, opts chat.ReadOptions, replica bool, floor wal.LSN, shared bool) ([]byte, chat.Source, error) {
	ctx = monitor.WithQueryName(ctx, spec.query)
	var value []byte
	fn := func(ctx context.Context, q postgres.Querier) error {
		value = nil
		if shared && spec.conv != 0 {
			body, members, err := spec.loadShared(ctx, q)
			if err != nil {
				return err
			}
			value = packMembers(members, body)
			return nil
		}
		body, err := spec.load(ctx, q)
		if err != nil {
			return err
		}
		value = body
		return nil
	}
	c := dbrouter.ReadYourWrites(max(floor, opts.Token))
	switch {
	case opts.Strong:
		c, replica = dbrouter.Strong, true // allowed, so that the router counts reason="strong"
	case replica:
		if token, known := s.userToken(ctx, userID); known {
			c = dbrouter.ReadYourWrites(max(floor, opts.Token, token))
		} else {
			c = dbrouter.PositionUnknown
		}
	}
	target, err := s.router.Read(ctx, spec.endpoint, dbrouter.Route{Consistency: c, ReplicaAllowed: replica}, fn)
	return value, chat.Source(target), DomainError(ctx, err)
}

// userToken returns the position of userID's last write as the cache knows
// it (0: none within the token TTL; possibly the floor of a user record
// made recently, which stands for writes Redis may have lost). known is
// false when the cache cannot say — Redis unreachable, timed out, breaker
// open, no current epoch, a lost record whose floor could not be read —:
// then any replica may lack a write this user made through another
// instance, and the read goes to the primary (reason token_unknown). A
// token the client sends (X-Consistency-Token) is honoured as well, but
// cannot stand in for the user's other writes.
func (s *Service) userToken(ctx context.Context, userID int64) (token wal.LSN, known bool) {
	pos, ok, err := s.cache.UserToken(ctx, userID)
	switch {
	case err != nil:
		return 0, false
	case !ok:
		return 0, true
	}
	return pos, true
}
