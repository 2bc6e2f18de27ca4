package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/parley-chat/parley/internal/cache"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/dbrouter"
	"github.com/parley-chat/parley/internal/monitor"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/rollout"
)

// The read path of the cacheable endpoints (message history, the
// conversation list and a single conversation, unread counts):
//
//  1. rollout.Decide(endpoint, user): the baseline path (primary, no cache)
//     or the optimized one, with the cache and/or replicas as the endpoint's
//     rollout says; the cohort labels the request's metrics;
//  2. X-Consistency: strong → the primary, no cache;
//  3. with the cache on: cache.GetOrFill; a hit answers with the stored body
//     (X-Read-Source: cache). A fill obeys the cache's rule (never store
//     what a replica behind the owner's last write read): it reads with
//     read-your-writes at the owner's write position (Fill.MinLSN), the
//     primary when that is unknown;
//  4. the database read itself (route): a replica only if the rollout allows
//     it and one has replayed max(X-Consistency-Token, the user's stored
//     token, the fill's floor); else the primary. The router retries a
//     replica that fails with a connection error on the primary.

// readSpec is one read of a cacheable endpoint.
type readSpec struct {
	rollout  string // the rollout switch that decides (rollout.MessageHistory, …)
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
}

// decide is the rollout decision for userID on endpoint; baseline without
// a rollout store.
func (s *Server) decide(endpoint string, userID int64) rollout.Decision {
	if s.cfg.Rollouts == nil {
		return rollout.Decision{Cohort: rollout.CohortBaseline}
	}
	return s.cfg.Rollouts.Decide(endpoint, userID)
}

// serveRead answers a read of spec for u with status 200, or returns the
// error for the caller to map (fail or failIn).
func (s *Server) serveRead(w http.ResponseWriter, r *http.Request, u chat.User, spec readSpec) error {
	ctx := r.Context()
	st := stateFrom(ctx)
	d := s.decide(spec.rollout, u.ID)
	SetCohort(ctx, d.Cohort)
	opts := st.read

	var (
		value []byte
		src   string
		err   error
	)
	if d.Cache && !opts.strong {
		var res cache.Result
		value, res, err = s.cache.GetOrFill(ctx, spec.endpoint, spec.key, func(ctx context.Context, f cache.Fill) ([]byte, bool, error) {
			replica, floor := d.Replica, dbrouter.LSN(0)
			if f.Store {
				// Cacheable only from the primary or a replica at the owner's
				// last write: route at that position (primary if unknown).
				if l, perr := parsePosition(f.MinLSN); perr == nil {
					floor = l
				} else {
					replica = false
				}
			}
			v, source, err := s.route(ctx, spec, u.ID, opts, replica, floor)
			src = source
			return v, err == nil, err
		})
		if res == cache.ResultHit {
			src = sourceCache
			if s.router != nil {
				s.router.RecordRead(spec.endpoint, dbrouter.TargetCache, "hit")
			}
		}
	} else {
		value, src, err = s.route(ctx, spec, u.ID, opts, d.Replica, 0)
	}
	if src != "" {
		SetReadSource(ctx, src)
	}
	if err != nil {
		return err
	}
	body := value
	if spec.conv != 0 {
		var member bool
		if body, member = unpackMembers(value, u.ID); !member {
			// Another member's value (the cache's, or a fill shared in this
			// process): the database decides, and answers a non-member 404.
			value, src, err = s.route(ctx, spec, u.ID, opts, d.Replica, 0)
			if src != "" {
				SetReadSource(ctx, src)
			}
			if err != nil {
				return err
			}
			if body, member = unpackMembers(value, u.ID); !member {
				return chat.Errorf(chat.ENOTFOUND, "conversation not found")
			}
		}
	}
	writeBody(w, http.StatusOK, body)
	return nil
}

// route runs spec's read on the database: through the router, on a replica
// when replica is true and one has replayed the larger of floor, the
// request's token and the user's stored token; else on the primary. It
// returns the value, where it ran ("primary"/"replica") and the error.
func (s *Server) route(ctx context.Context, spec readSpec, userID int64, opts readOptions, replica bool, floor dbrouter.LSN) ([]byte, string, error) {
	ctx = monitor.WithQueryName(ctx, spec.query)
	var value []byte
	fn := func(ctx context.Context, q postgres.Querier) error {
		value = nil
		body, err := spec.load(ctx, q)
		if err != nil {
			return err
		}
		if spec.conv != 0 {
			members, err := s.cfg.Store.MemberIDs(monitor.WithQueryName(ctx, "conversation_members"), q, spec.conv)
			if err != nil {
				return err
			}
			body = packMembers(members, body)
		}
		value = body
		return nil
	}
	if s.router == nil {
		src, err := s.reader.Read(ctx, spec.endpoint, fn)
		return value, src, err
	}
	c := dbrouter.ReadYourWrites(max(floor, opts.token))
	switch {
	case opts.strong:
		c, replica = dbrouter.Strong, true // allowed, so that the router counts reason="strong"
	case replica:
		token, primaryOnly := s.userToken(ctx, userID)
		if primaryOnly {
			replica = false
		} else {
			c = dbrouter.ReadYourWrites(max(floor, opts.token, token))
		}
	}
	ctx = dbrouter.WithReplicaAllowed(dbrouter.WithConsistency(ctx, c), replica)
	src, err := s.router.Read(ctx, spec.endpoint, func(ctx context.Context, q dbrouter.Querier) error { return fn(ctx, q) })
	return value, src, err
}

// encodeJSON is v as a response body (as writeJSON would write it).
func encodeJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	return b.Bytes(), nil
}

// writeBody writes a JSON body made by encodeJSON (or stored by the cache).
func writeBody(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}
