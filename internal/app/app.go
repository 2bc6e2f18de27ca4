// Package app builds the whole Parley server from a Config: the query
// tracer, the router (primary and replica pools, probers), the Redis cache,
// the store, the cursor codec, the rollout switches, the database monitors,
// the service and the HTTP API with its readiness checks, the API
// description (GET /openapi.json) and the dashboard (/dashboard). `parley serve`,
// `parley dev` and the integration tests all build their servers here, so
// what is tested is what runs.
//
//	a, err := app.New(ctx, cfg) // connects lazily; reads the rollouts once
//	a.Start()                   // background loops: rollout poll, cache probe, monitors
//	err = a.Serve(ctx, ln)      // HTTP until ctx ends, then a graceful shutdown
//	a.Close()                   // stop the loops, close the pools and Redis
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/api"
	"github.com/parley-chat/parley/internal/admission"
	"github.com/parley-chat/parley/internal/cache"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/chatsvc"
	"github.com/parley-chat/parley/internal/dashboard"
	"github.com/parley-chat/parley/internal/dbrouter"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/monitor"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/rollout"
	"github.com/parley-chat/parley/internal/wal"
)

// Config is everything a server needs. Zero values take the defaults named.
type Config struct {
	// PrimaryURL is the primary, direct or through PgBouncer (required).
	PrimaryURL string
	// PrimaryExecMode is pgx's exec mode on the primary pool (default
	// "exec": safe behind PgBouncer's transaction pooling).
	PrimaryExecMode string
	// ReplicaURLs are the streaming replicas, direct (optional).
	ReplicaURLs []string
	// ReplicaExecMode is the replicas' exec mode (default "cache_statement").
	ReplicaExecMode string
	// RedisURL is the cache's Redis (optional: without it nothing is cached).
	RedisURL string
	// CachePrefix is put before every Redis key (no braces).
	CachePrefix string
	// CacheOpTimeout bounds each Redis round trip on the request path
	// (default the cache's, cache.Config.OpTimeout). Tests of what the cache
	// guarantees while Redis answers raise it, so that a busy test machine
	// does not turn into a Redis outage (fail-open).
	CacheOpTimeout time.Duration
	// PgBouncerAdminURL is PgBouncer's admin console, for the pool monitor
	// (optional).
	PgBouncerAdminURL string
	// AdminToken authorizes the admin endpoints (required).
	AdminToken string
	// CursorKey overrides the cursor signing key stored in the database
	// (hex, at least 16 bytes; "" uses the stored one).
	CursorKey string
	// PrimaryPoolConns and ReplicaPoolConns cap the pools (0: pgx's default).
	PrimaryPoolConns int
	ReplicaPoolConns int
	// MaxReplicaLag takes a replica this far behind out of rotation (default
	// dbrouter.DefaultMaxLag).
	MaxReplicaLag time.Duration
	// ReplicaWait bounds how long a read held to a write no replica has
	// replayed waits for one to replay it before the primary serves it
	// (0: dbrouter.DefaultReplicaWait; negative: no wait).
	ReplicaWait time.Duration
	// AcquireTimeout bounds the wait for a pooled connection (default
	// dbrouter.DefaultAcquireTimeout).
	AcquireTimeout time.Duration
	// RequestTimeout bounds each request (default httpapi.DefaultRequestTimeout).
	RequestTimeout time.Duration
	// DBBudget bounds the database work of one request (default
	// chatsvc.DefaultDBBudget); past it the request is answered 503.
	DBBudget time.Duration
	// ShutdownTimeout bounds the graceful shutdown of Serve (default 15 s).
	ShutdownTimeout time.Duration
	// Admission is the API's overload protection; its zero value leaves it
	// off (parley serve and dev turn it on by default).
	Admission Admission
	// NoMonitors leaves the database monitors out (they tune autovacuum at
	// start); the tests that share a database between servers use it.
	NoMonitors bool

	Logger *slog.Logger
	// AccessLog receives one line per request (nil: Logger); AccessLogSample
	// is the share of ordinary requests it logs (0: all; negative: none).
	AccessLog       *slog.Logger
	AccessLogSample float64
}

// Admission configures admission control (internal/admission): an
// adaptive concurrency limit for reads and one for writes, in front of the
// API's database work. Zero values take the defaults named.
type Admission struct {
	Enabled bool
	// InitialLimit and MinLimit are each class's starting limit and floor
	// (default 40 and 4).
	InitialLimit, MinLimit int
	// ReadMaxLimit and WriteMaxLimit are the ceilings (default 4× the
	// connections of the pools that serve the class: the replica or primary
	// pool for reads, the primary pool for writes).
	ReadMaxLimit, WriteMaxLimit int
	// MaxLatency is a p90 service time that backs the limit off (default
	// 200 ms); LatencyFloor one that never lowers it (default 100 ms).
	MaxLatency, LatencyFloor time.Duration
	// QueueWait and StandingQueueWait bound a wait in the queue while it
	// drains and once it stands (default 5 ms and 5 ms).
	QueueWait, StandingQueueWait time.Duration
}

// httpAdmission is the API's form of the admission settings (nil: off).
func (c Config) httpAdmission() *httpapi.Admission {
	ad := c.Admission
	if !ad.Enabled {
		return nil
	}
	pool := func(n int) int {
		if n <= 0 {
			return 20
		}
		return n
	}
	readMax, writeMax := ad.ReadMaxLimit, ad.WriteMaxLimit
	if readMax <= 0 {
		readMax = 4 * max(pool(c.PrimaryPoolConns), pool(c.ReplicaPoolConns))
	}
	if writeMax <= 0 {
		writeMax = 4 * pool(c.PrimaryPoolConns)
	}
	class := func(maxLimit int) admission.Config {
		return admission.Config{Initial: ad.InitialLimit, Min: ad.MinLimit, Max: maxLimit, MaxLatency: ad.MaxLatency, LatencyFloor: ad.LatencyFloor,
			QueueWait: ad.QueueWait, QueueStandingWait: ad.StandingQueueWait}
	}
	return &httpapi.Admission{Read: class(readMax), Write: class(writeMax)}
}

// ErrConfig marks an error in the configuration (a malformed URL, an
// unknown exec mode, a bad cache prefix): the operator must fix it.
var ErrConfig = errors.New("configuration error")

// App is one server, built and ready to serve.
type App struct {
	cfg      Config
	log      *slog.Logger
	Registry *prometheus.Registry
	Router   *dbrouter.Router
	Cache    *cache.Cache
	Rollouts *rollout.Store
	Monitors *monitor.Monitors // nil with NoMonitors
	Service  *chatsvc.Service
	// Dashboard is the live operations page (/dashboard) and its sampler.
	Dashboard *dashboard.Dashboard
	// Handler is the HTTP API (httpapi.Server).
	Handler http.Handler

	redis  redis.UniversalClient
	stop   context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

var redisLoggerOnce sync.Once

// New builds the server. Pools connect lazily (an unreachable replica is not
// an error), but the primary must answer: the rollout state and the cursor
// key are read from it before New returns.
func New(ctx context.Context, cfg Config) (*App, error) {
	if cfg.PrimaryURL == "" {
		return nil, fmt.Errorf("%w: the primary URL is required", ErrConfig)
	}
	if cfg.AdminToken == "" {
		return nil, fmt.Errorf("%w: the admin token is required", ErrConfig)
	}
	if strings.ContainsAny(cfg.CachePrefix, "{}") {
		return nil, fmt.Errorf("%w: the cache prefix must not contain braces (Redis Cluster hash tags)", ErrConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 15 * time.Second
	}
	log := cfg.Logger
	a := &App{cfg: cfg, log: log, Registry: prometheus.NewRegistry()}
	ok := false
	defer func() {
		if !ok {
			a.Close()
		}
	}()
	reg := a.Registry
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	qp, err := monitor.NewQueryPerformance(monitor.QueryPerformanceOptions{Registerer: reg, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("query monitor: %w", err)
	}
	if a.Router, err = dbrouter.New(ctx, dbrouter.Config{
		PrimaryURL:          cfg.PrimaryURL,
		PrimaryExecMode:     cfg.PrimaryExecMode,
		ReplicaURLs:         cfg.ReplicaURLs,
		ReplicaExecMode:     cfg.ReplicaExecMode,
		PoolMaxConns:        int32(cfg.PrimaryPoolConns),
		ReplicaPoolMaxConns: int32(cfg.ReplicaPoolConns),
		AcquireTimeout:      cfg.AcquireTimeout,
		MaxLag:              cfg.MaxReplicaLag,
		ReplicaWait:         cfg.ReplicaWait,
		Registerer:          reg,
		Logger:              log,
		Tracer:              func(target string) pgx.QueryTracer { return qp.Tracer(target) },
	}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if cfg.RedisURL != "" {
		redisLoggerOnce.Do(func() { redis.SetLogger(cache.RedisLogger(log)) })
		if a.redis, err = cache.NewClient(cfg.RedisURL); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	router := a.Router
	a.Cache = cache.New(a.redis, cache.Config{Logger: log, Registerer: reg, Prefix: cfg.CachePrefix, OpTimeout: cfg.CacheOpTimeout,
		// A floor for a record the cache (re)creates: the primary's position now.
		Position: func(ctx context.Context) (wal.LSN, error) {
			return router.CommitLSN(monitor.WithQueryName(ctx, "cache_floor"))
		}})

	primary := a.Router.Primary()
	var key []byte
	err = whileUnavailable(ctx, func() (err error) {
		key, err = postgres.CursorKey(ctx, primary, cfg.CursorKey)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cursor key: %w", chatsvc.DomainError(ctx, err))
	}
	cursors, err := chat.NewCursorCodec(key)
	if err != nil {
		return nil, fmt.Errorf("%w: cursor key: %w", ErrConfig, err)
	}
	a.Rollouts = rollout.NewStore(primary, log, reg)
	if err := whileUnavailable(ctx, func() error { return a.Rollouts.Refresh(ctx) }); err != nil {
		return nil, fmt.Errorf("rollouts (are the migrations applied?): %w", err)
	}
	if !cfg.NoMonitors {
		if a.Monitors, err = monitor.New(monitor.Config{
			Logger: log, Registerer: reg, Primary: primary,
			PgBouncerAdminURL: cfg.PgBouncerAdminURL, Queries: qp,
		}); err != nil {
			return nil, fmt.Errorf("monitors: %w", err)
		}
	}
	svcCfg := chatsvc.Config{
		Store: postgres.New(primary), Router: a.Router, Cache: a.Cache, Rollouts: a.Rollouts,
		Cursors: cursors, Logger: log, DBBudget: cfg.DBBudget,
	}
	if a.Monitors != nil {
		svcCfg.Monitors = a.Monitors
	}
	if a.Service, err = chatsvc.New(svcCfg); err != nil {
		return nil, err
	}
	spec, err := api.Handler()
	if err != nil {
		return nil, fmt.Errorf("the API description: %w", err)
	}
	if a.Dashboard, err = dashboard.New(dashboard.Config{
		AdminToken: cfg.AdminToken,
		Gatherer:   reg,
		Replicas: func() []dashboard.Replica {
			var out []dashboard.Replica
			for _, st := range router.Status() {
				out = append(out, dashboard.Replica{Name: st.Name, State: st.State, Breaker: st.Breaker,
					LagSeconds: st.LagSeconds, LagBytes: st.LagBytes, ProbedAt: st.ProbedAt})
			}
			return out
		},
		Rollouts: a.Rollouts.Snapshot,
		Logger:   log,
	}); err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	routes := a.Dashboard.Routes()
	routes["GET /openapi.json"] = spec
	a.Handler = httpapi.New(httpapi.Config{
		Logger:          log,
		AccessLog:       cfg.AccessLog,
		AccessLogSample: cfg.AccessLogSample,
		Gatherer:        reg,
		Registerer:      reg,
		Checks:          a.readinessChecks(),
		Service:         a.Service,
		Admin:           a.Service,
		Cursors:         cursors,
		AdminToken:      cfg.AdminToken,
		RequestTimeout:  cfg.RequestTimeout,
		Admission:       cfg.httpAdmission(),
		Routes:          routes,
	})
	ok = true
	return a, nil
}

// Start runs the background loops (the rollout poll, the cache's Redis
// probe, the dashboard's sampler, the monitors) until Close.
func (a *App) Start() {
	bg, stop := context.WithCancel(context.Background())
	a.stop = stop
	a.wg.Go(func() { a.Rollouts.Run(bg) })
	a.wg.Go(func() { a.Cache.Run(bg) })
	if a.cfg.RedisURL != "" {
		a.wg.Go(func() { a.Service.RunWitness(bg) })
	}
	a.wg.Go(func() { a.Dashboard.Run(bg) })
	if a.Monitors != nil {
		a.wg.Go(func() { _ = a.Monitors.Run(bg) })
	}
}

// Close stops the background loops and closes the pools and the Redis
// client. It is safe to call more than once.
func (a *App) Close() {
	a.closed.Do(func() {
		if a.stop != nil {
			a.stop()
		}
		a.wg.Wait()
		if a.Router != nil {
			a.Router.Close()
		}
		if a.redis != nil {
			_ = a.redis.Close()
		}
	})
}

// Serve answers HTTP on ln until ctx ends, then stops accepting, finishes
// in-flight requests (within Config.ShutdownTimeout) and returns nil.
func (a *App) Serve(ctx context.Context, ln net.Listener) error {
	srv := httpapi.NewHTTPServer(ln.Addr().String(), a.Handler, a.log)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	a.log.Info("shutting down: finishing in-flight requests", "timeout", a.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// readinessChecks are /readyz's components: the primary (required), each
// replica and the cache (optional: down means "degraded"). A replica is
// down when it does not answer now, or when its breaker keeps reads off it.
func (a *App) readinessChecks() []httpapi.Check {
	probe := func(f func(context.Context) error) func(context.Context) error {
		return func(ctx context.Context) error { return chatsvc.DomainError(ctx, f(ctx)) }
	}
	router := a.Router
	checks := []httpapi.Check{{Name: "primary", Required: true, Probe: probe(router.Ping)}}
	for _, st := range router.Status() {
		name := st.Name
		checks = append(checks, httpapi.Check{Name: name, Probe: probe(func(ctx context.Context) error {
			if err := router.PingReplica(ctx, name); err != nil {
				return err
			}
			for _, st := range router.Status() {
				if st.Name == name && st.Breaker != dbrouter.BreakerClosed.String() {
					return fmt.Errorf("not serving reads: state %s, breaker %s", st.State, st.Breaker)
				}
			}
			return nil
		})})
	}
	if a.cfg.RedisURL != "" {
		checks = append(checks, httpapi.Check{Name: "cache", Probe: probe(a.Cache.Ping)})
	}
	return checks
}

// startupPatience is how long New retries its first queries while the
// primary is unavailable.
const startupPatience = 20 * time.Second

// whileUnavailable runs fn until it succeeds, fails otherwise than with the
// database unavailable (postgres.ErrUnavailable: no connection within the
// pool's short acquire bound, a timeout), or startupPatience has passed:
// a primary slow to answer the first queries — a busy machine, PgBouncer
// still opening its server connections — delays the start instead of
// failing it (seen: one of two instances started at once exited on its
// cursor-key read).
func whileUnavailable(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(startupPatience)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		err := fn()
		if err == nil || !errors.Is(postgres.Classify(ctx, err), postgres.ErrUnavailable) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}
