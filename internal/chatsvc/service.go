package chatsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/parley-chat/parley/internal/cache"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/dbrouter"
	"github.com/parley-chat/parley/internal/monitor"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/rollout"
)

// Config wires a Service to the data layer.
type Config struct {
	// Store runs the SQL; its pool must be the Router's primary pool.
	Store *postgres.Store
	// Router routes every read (replicas per the rollout, read-your-writes)
	// and normalises write positions into tokens.
	Router *dbrouter.Router
	// Cache serves the cacheable reads when the endpoint's rollout enables
	// it, keeps the users' read-your-writes tokens, and is invalidated after
	// every write whatever the rollout says. Nil: no Redis (nothing is
	// cached; tokens are kept per instance).
	Cache *cache.Cache
	// Rollouts decides, per endpoint and user, between the baseline path
	// (primary, no cache) and the optimized one.
	Rollouts *rollout.Store
	// Monitors, when set, is summarised in Status.
	Monitors interface{ Summary() monitor.Summary }
	// Cursors signs pagination cursors; every instance must share its key
	// (postgres.CursorKey).
	Cursors *chat.CursorCodec
	Logger  *slog.Logger
	// AuthCacheTTL is how long this instance remembers a bearer token's user
	// (default DefaultAuthCacheTTL; negative: every request reads the
	// database).
	AuthCacheTTL time.Duration
	// DBBudget bounds the database work of one request — waiting for a
	// connection, PgBouncer's queue and the statements (default
	// DefaultDBBudget). Past it the request is answered 503 + Retry-After
	// and pgx cancels the statement on the server. Keep it above the role's
	// statement_timeout (1 s, migration 0070), so that a slow statement ends
	// on the server first, its connection kept: the budget only fires on
	// hangs (a hung PgBouncer, a queue).
	DBBudget time.Duration
	// InstanceID names this instance in the cache witness (default: host,
	// pid and a random part).
	InstanceID string
	// WriteTimeout bounds a write's acknowledgement after its commit (the
	// token, the invalidations, waiting for their delivery to Redis; default
	// DefaultWriteTimeout).
	WriteTimeout time.Duration
}

// Defaults of Config.
const (
	DefaultDBBudget     = 1500 * time.Millisecond
	DefaultWriteTimeout = 3 * time.Second
)

// Service implements chat.Service and chat.Admin on the data layer.
type Service struct {
	cfg      Config
	log      *slog.Logger
	store    *postgres.Store
	router   *dbrouter.Router
	cache    *cache.Cache
	rollouts *rollout.Store
	enc      chat.Encoder
	auth     *authCache
}

var (
	_ chat.Service = (*Service)(nil)
	_ chat.Admin   = (*Service)(nil)
)

// New returns the service; Store, Router, Rollouts and Cursors are required.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Router == nil || cfg.Rollouts == nil || cfg.Cursors == nil {
		return nil, errors.New("chatsvc: Store, Router, Rollouts and Cursors are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.AuthCacheTTL == 0 {
		cfg.AuthCacheTTL = DefaultAuthCacheTTL
	}
	if cfg.DBBudget <= 0 {
		cfg.DBBudget = DefaultDBBudget
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.InstanceID == "" {
		cfg.InstanceID = newInstanceID()
	}
	s := &Service{cfg: cfg, log: cfg.Logger, store: cfg.Store, router: cfg.Router, cache: cfg.Cache,
		rollouts: cfg.Rollouts, enc: chat.Encoder{Cursors: cfg.Cursors},
		auth: newAuthCache(cfg.AuthCacheTTL, defaultAuthCacheSize)}
	if s.cache == nil {
		s.cache = cache.New(nil, cache.Config{Logger: cfg.Logger})
	}
	// Every series of the read path exists from the start, at zero.
	s.router.DeclareEndpoints(chat.EndpointMessageHistory, chat.EndpointConversationList, chat.EndpointConversation,
		chat.EndpointUnreadCount, chat.EndpointAuth)
	s.cache.DeclareEndpoints(chat.EndpointMessageHistory, chat.EndpointConversationList, chat.EndpointConversation,
		chat.EndpointUnreadCount)
	return s, nil
}

// DomainError maps an error of the data layer to the API's terms: the
// database unable to serve now (postgres.ErrUnavailable, a broken
// connection, or the request's own deadline while its caller is still there)
// is chat.EUNAVAILABLE, with err as the cause; domain errors and anything
// else (internal errors, the caller's own cancellation) are returned as they
// are.
func DomainError(ctx context.Context, err error) error {
	if err == nil || chat.ErrorCode(err) != chat.EINTERNAL {
		return err
	}
	deadline := errors.Is(err, context.DeadlineExceeded) && !errors.Is(context.Cause(ctx), context.Canceled)
	if errors.Is(err, postgres.ErrCommitUnknown) {
		return &chat.Error{Code: chat.EUNAVAILABLE, Message: "the database did not confirm the write; retry with the same Idempotency-Key", Err: err}
	}
	if errors.Is(err, postgres.ErrUnavailable) || postgres.IsConnectionError(err) || deadline || postgres.IsTimeout(err) {
		return &chat.Error{Code: chat.EUNAVAILABLE, Message: "the database is unavailable; retry shortly", Err: err}
	}
	return err
}

// budget bounds ctx's database work by Config.DBBudget.
func (s *Service) budget(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.DBBudget)
}

// writeContext is the context of a write's database work: detached from the
// client (a client that hangs up must not cut a write between its COMMIT
// and its acknowledgement), bounded by the database budget and by the
// request's own deadline, whichever comes first: the request's earlier
// database work (its authentication) does not extend it (a send could take
// two budgets, 3 s against a 2 s request deadline).
func (s *Service) writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d := time.Now().Add(s.cfg.DBBudget)
	if rd, ok := ctx.Deadline(); ok && rd.Before(d) {
		d = rd
	}
	return context.WithDeadline(context.WithoutCancel(ctx), d)
}

// Status is GET /admin/status: this instance's latest probe of each replica
// and pool, its cache state, its applied rollouts and its monitors' latest
// polls. Nothing in it waits for a database.
func (s *Service) Status(context.Context) chat.Status {
	out := chat.Status{
		Replicas: s.router.Status(),
		Cache:    chat.CacheStatus{State: "down"},
		Rollouts: map[string]chat.Rollout{},
		Monitors: struct{}{},
	}
	if out.Replicas == nil {
		out.Replicas = []dbrouter.ReplicaStatus{}
	}
	pools := map[string]dbrouter.PoolStat{}
	for _, p := range s.router.PoolStats() {
		pools[p.Name] = p
	}
	out.Pools = pools
	if s.cache.Up() {
		out.Cache.State = "up"
	}
	for _, st := range s.rollouts.Snapshot() {
		out.Rollouts[st.Endpoint] = st
	}
	if s.cfg.Monitors != nil {
		out.Monitors = s.cfg.Monitors.Summary()
	}
	return out
}

// Rollouts reads every endpoint's switch as stored.
func (s *Service) Rollouts(ctx context.Context) ([]chat.Rollout, error) {
	ctx, cancel := s.budget(ctx)
	defer cancel()
	rs, err := s.rollouts.List(ctx)
	if err != nil {
		return nil, DomainError(ctx, fmt.Errorf("list rollouts: %w", err))
	}
	return rs, nil
}

// SetRollout stores a change of an endpoint's switch; this instance applies
// it at once, the others at their next poll (within a second).
func (s *Service) SetRollout(ctx context.Context, endpoint string, u chat.RolloutUpdate) (chat.Rollout, error) {
	ctx, cancel := s.writeContext(ctx)
	defer cancel()
	r, err := s.rollouts.Set(ctx, endpoint, u)
	return r, DomainError(ctx, err)
}
