package rollout

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/chat"
)

// DefaultPollInterval is how often Run reads the table. With the jitter and
// a query of a few milliseconds, a change made on one instance is applied by
// every other within about 0.6 s (the contract says 2 s).
const DefaultPollInterval = 500 * time.Millisecond

// Store is the rollout state of this instance: an atomic snapshot that
// Decide reads, kept up to date from PostgreSQL by Run and by Set.
type Store struct {
	pool     *pgxpool.Pool
	log      *slog.Logger
	interval time.Duration
	metrics  *metrics

	snap atomic.Pointer[snapshot]
	mu   sync.Mutex // serializes merges into snap

	lastRefresh atomic.Int64 // unix nanoseconds of the last successful read
}

// entry is one endpoint's state with the row version it came from (0 until
// read from the database).
type entry struct {
	chat.Rollout
	version int64
}

type snapshot struct {
	entries [numEndpoints]entry
}

// Option configures a Store.
type Option func(*Store)

// WithPollInterval sets how often Run reads the table (default 500 ms).
func WithPollInterval(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.interval = d
		}
	}
}

// NewStore returns a Store on pool (the primary, direct or through
// PgBouncer: every statement is a single round trip in any exec mode). Until
// the first read of the table every endpoint is on the baseline path (0%).
// reg may be nil.
func NewStore(pool *pgxpool.Pool, log *slog.Logger, reg prometheus.Registerer, opts ...Option) *Store {
	if log == nil {
		log = slog.Default()
	}
	s := &Store{pool: pool, log: log, interval: DefaultPollInterval, metrics: newMetrics(reg)}
	for _, o := range opts {
		o(s)
	}
	var sn snapshot
	for i, e := range chat.RolloutEndpoints() {
		sn.entries[i] = entry{Rollout: chat.Rollout{Endpoint: e}}
	}
	s.snap.Store(&sn)
	s.metrics.observe(&sn)
	return s
}

// Decide says how the request of userID on endpoint is served. It reads the
// current snapshot without locks or allocation. An unknown endpoint gets the
// baseline decision.
func (s *Store) Decide(endpoint string, userID int64) Decision {
	i, ok := endpointIndex(endpoint)
	if !ok {
		return baseline
	}
	e := &s.snap.Load().entries[i]
	if !InRollout(endpoint, userID, e.Percent) {
		return baseline
	}
	return Decision{Optimized: true, Cache: e.Cache, Replica: e.Replica, Cohort: chat.CohortOptimized}
}

// Snapshot returns this instance's current state of every endpoint, in the
// order of Endpoints.
func (s *Store) Snapshot() []chat.Rollout {
	sn := s.snap.Load()
	out := make([]chat.Rollout, numEndpoints)
	for i := range sn.entries {
		out[i] = sn.entries[i].Rollout
	}
	return out
}

// LastRefresh is when the table was last read successfully (zero if never).
func (s *Store) LastRefresh() time.Time {
	ns := s.lastRefresh.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

const selectAll = `SELECT endpoint, percent, cache, replica, version FROM rollouts`

// Refresh reads the table once and applies it to the snapshot.
func (s *Store) Refresh(ctx context.Context) error {
	rows, err := s.pool.Query(ctx, selectAll)
	if err != nil {
		return fmt.Errorf("read rollouts: %w", err)
	}
	es, err := pgx.CollectRows(rows, scanEntry)
	if err != nil {
		return fmt.Errorf("read rollouts: %w", err)
	}
	s.merge(es...)
	s.lastRefresh.Store(time.Now().UnixNano())
	return nil
}

// List reads every endpoint's state from the database (and applies it).
func (s *Store) List(ctx context.Context) ([]chat.Rollout, error) {
	if err := s.Refresh(ctx); err != nil {
		return nil, err
	}
	return s.Snapshot(), nil
}

// Get reads one endpoint's state from the database (and applies it).
func (s *Store) Get(ctx context.Context, endpoint string) (chat.Rollout, error) {
	i, ok := endpointIndex(endpoint)
	if !ok {
		return chat.Rollout{}, chat.CheckRolloutEndpoint(endpoint)
	}
	if err := s.Refresh(ctx); err != nil {
		return chat.Rollout{}, err
	}
	return s.snap.Load().entries[i].Rollout, nil
}

// upsert changes the given fields; a missing row (deleted by hand) is
// recreated with the defaults for the others. The version is taken after the
// row lock, so it grows in commit order.
const upsert = `
INSERT INTO rollouts AS r (endpoint, percent, cache, replica)
VALUES ($1, coalesce($2::smallint, 0), coalesce($3::boolean, false), coalesce($4::boolean, false))
ON CONFLICT (endpoint) DO UPDATE SET
    percent    = coalesce($2::smallint, r.percent),
    cache      = coalesce($3::boolean, r.cache),
    replica    = coalesce($4::boolean, r.replica),
    version    = nextval('rollouts_version_seq'),
    updated_at = now()
RETURNING endpoint, percent, cache, replica, version`

// Set applies u to the endpoint in PostgreSQL and to this instance's
// snapshot at once; the other instances follow within a poll interval.
// Bad input is a *chat.Error: ENOTFOUND for an endpoint without a switch,
// EINVALID for a value out of range.
func (s *Store) Set(ctx context.Context, endpoint string, u chat.RolloutUpdate) (chat.Rollout, error) {
	if _, ok := endpointIndex(endpoint); !ok {
		return chat.Rollout{}, chat.CheckRolloutEndpoint(endpoint)
	}
	if err := u.Validate(); err != nil {
		return chat.Rollout{}, err
	}
	if u.Empty() {
		return s.Get(ctx, endpoint)
	}
	var pct *int16
	if u.Percent != nil {
		p := int16(*u.Percent)
		pct = &p
	}
	rows, err := s.pool.Query(ctx, upsert, endpoint, pct, u.Cache, u.Replica)
	if err != nil {
		return chat.Rollout{}, fmt.Errorf("set rollout %s: %w", endpoint, err)
	}
	e, err := pgx.CollectExactlyOneRow(rows, scanEntry)
	if err != nil {
		return chat.Rollout{}, fmt.Errorf("set rollout %s: %w", endpoint, err)
	}
	s.merge(e)
	s.log.Info("rollout changed", "endpoint", e.Endpoint, "percent", e.Percent,
		"cache", e.Cache, "replica", e.Replica, "version", e.version)
	return e.Rollout, nil
}

func scanEntry(row pgx.CollectableRow) (entry, error) {
	var e entry
	var pct int16
	err := row.Scan(&e.Endpoint, &pct, &e.Cache, &e.Replica, &e.version)
	e.Percent = int(pct)
	return e, err
}

// merge applies rows to the snapshot, keeping per endpoint the row with the
// higher version (a poll that read before a concurrent Set must not undo it).
// Rows of endpoints this build does not know are ignored.
func (s *Store) merge(es ...entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.snap.Load()
	next := *cur
	changed := false
	for _, e := range es {
		i, ok := endpointIndex(e.Endpoint)
		if !ok || e.version < next.entries[i].version || e == next.entries[i] {
			continue
		}
		if e.Rollout != next.entries[i].Rollout && next.entries[i].version != 0 {
			s.log.Info("rollout applied", "endpoint", e.Endpoint, "percent", e.Percent,
				"cache", e.Cache, "replica", e.Replica, "version", e.version)
		}
		next.entries[i] = e
		changed = true
	}
	if changed {
		s.snap.Store(&next)
		s.metrics.observe(&next)
	}
}

// Run polls the table until ctx ends. It reads once at once; failures are
// logged when they start and when they stop, and the last good state stays.
// While polls fail, the interval doubles after each, up to 8 times the
// normal one: a database that cannot answer (PgBouncer restarting, its pool
// held) is not asked again every second by every instance, and behind
// PgBouncer a poll that gives up while queued or just as it gets a server
// connection makes PgBouncer close that connection.
func (s *Store) Run(ctx context.Context) {
	failing := false
	wait := s.interval
	for {
		qctx, cancel := context.WithTimeout(ctx, max(s.interval, time.Second))
		err := s.Refresh(qctx)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			s.metrics.errors.Inc()
			if !failing {
				s.log.Warn("rollout poll failing; keeping the last state", "err", err)
			}
			failing = true
		case err == nil && failing:
			s.log.Info("rollout poll recovered")
			failing = false
		}
		switch {
		case err != nil && ctx.Err() == nil:
			wait = min(2*wait, 8*s.interval)
		default:
			wait = s.interval
		}
		// ±10% jitter so that instances do not poll in lockstep.
		d := wait + time.Duration((rand.Float64()-0.5)*0.2*float64(wait))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
