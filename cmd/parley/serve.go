package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/postgres"
)

func init() {
	register(command{name: "serve", summary: "run the API server against external PostgreSQL, replicas and Redis", run: runServe})
}

// serveConfig is everything `parley serve` needs; `parley dev` fills it from the local stack.
type serveConfig struct {
	HTTPAddr         string
	PrimaryURL       string
	PrimaryExecMode  string
	ReplicaURLs      []string
	ReplicaExecMode  string
	RedisURL         string
	PgBouncerAdmin   string
	AdminToken       string
	ShutdownTimeout  time.Duration
	PrimaryPoolConns int
}

// bindServeFlags registers the flags shared by serve and dev.
func bindServeFlags(fs *flag.FlagSet, c *serveConfig) {
	fs.StringVar(&c.HTTPAddr, "http-addr", envString("PARLEY_HTTP_ADDR", "127.0.0.1:8080"), "listen address (env PARLEY_HTTP_ADDR)")
	fs.StringVar(&c.PrimaryExecMode, "primary-exec-mode", envString("PARLEY_PRIMARY_EXEC_MODE", "exec"),
		"pgx query exec mode on the primary pool: exec (safe behind PgBouncer transaction pooling) or cache_statement (direct connections) (env PARLEY_PRIMARY_EXEC_MODE)")
	fs.StringVar(&c.ReplicaExecMode, "replica-exec-mode", envString("PARLEY_REPLICA_EXEC_MODE", "cache_statement"),
		"pgx query exec mode on replica pools (env PARLEY_REPLICA_EXEC_MODE)")
	fs.IntVar(&c.PrimaryPoolConns, "primary-pool-size", envInt("PARLEY_PRIMARY_POOL_SIZE", 20), "max connections in the primary pool (env PARLEY_PRIMARY_POOL_SIZE)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "how long graceful shutdown waits for in-flight requests")
}

const serveHelp = `Run the API server. Nothing here assumes the local stack: every connection
is configured by URL. The primary URL may point at PgBouncer (transaction
pooling; keep --primary-exec-mode=exec) or at PostgreSQL directly.

Endpoints: /v1/... (see docs), /healthz, /readyz, /metrics, /admin/...
SIGINT/SIGTERM: stop accepting, finish in-flight requests, close pools.`

func runServe(ctx context.Context, args []string) error {
	fs := newFlagSet("serve", "[flags]", serveHelp)
	var c serveConfig
	bindServeFlags(fs, &c)
	fs.StringVar(&c.PrimaryURL, "primary-url", envString("PARLEY_PRIMARY_URL", ""), "primary PostgreSQL URL, e.g. postgres://user:pw@host:6432/parley (env PARLEY_PRIMARY_URL; required)")
	replicas := fs.String("replica-urls", envString("PARLEY_REPLICA_URLS", ""), "comma-separated replica URLs (env PARLEY_REPLICA_URLS; optional)")
	fs.StringVar(&c.RedisURL, "redis-url", envString("PARLEY_REDIS_URL", ""), "Redis URL, e.g. redis://host:6379/0 (env PARLEY_REDIS_URL; optional: without it nothing is cached)")
	fs.StringVar(&c.PgBouncerAdmin, "pgbouncer-admin-url", envString("PARLEY_PGBOUNCER_ADMIN_URL", ""), "PgBouncer admin console URL for pool metrics (env PARLEY_PGBOUNCER_ADMIN_URL; optional)")
	fs.StringVar(&c.AdminToken, "admin-token", envString("PARLEY_ADMIN_TOKEN", ""), "bearer token for admin endpoints (env PARLEY_ADMIN_TOKEN; required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c.ReplicaURLs = splitList(*replicas)
	if c.PrimaryURL == "" {
		return fmt.Errorf("%w: --primary-url (or PARLEY_PRIMARY_URL) is required", errUsage)
	}
	if c.AdminToken == "" {
		return fmt.Errorf("%w: --admin-token (or PARLEY_ADMIN_TOKEN) is required", errUsage)
	}
	return serve(ctx, c, nil)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseExecMode(s string) (pgx.QueryExecMode, error) {
	switch s {
	case "exec":
		return pgx.QueryExecModeExec, nil
	case "cache_statement":
		return pgx.QueryExecModeCacheStatement, nil
	case "cache_describe":
		return pgx.QueryExecModeCacheDescribe, nil
	case "describe_exec":
		return pgx.QueryExecModeDescribeExec, nil
	case "simple_protocol":
		return pgx.QueryExecModeSimpleProtocol, nil
	}
	return 0, fmt.Errorf("%w: unknown exec mode %q (want exec, cache_statement, cache_describe, describe_exec or simple_protocol)", errUsage, s)
}

func openPool(ctx context.Context, url, execMode string, maxConns int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%w: bad PostgreSQL URL: %v", errUsage, redactErr(err))
	}
	mode, err := parseExecMode(execMode)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.DefaultQueryExecMode = mode
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	return pgxpool.NewWithConfig(ctx, cfg)
}

// redactErr keeps a URL-parse error from echoing passwords.
func redactErr(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "://"); i >= 0 {
		return "cannot parse connection string"
	}
	return msg
}

// serve runs the API server until ctx ends. ready, when not nil, receives the
// listening address once the server accepts connections.
func serve(ctx context.Context, c serveConfig, ready func(addr string)) error {
	log := slog.Default()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	primary, err := openPool(ctx, c.PrimaryURL, c.PrimaryExecMode, c.PrimaryPoolConns)
	if err != nil {
		return fmt.Errorf("primary pool: %w", err)
	}
	defer primary.Close()
	checks := []httpapi.Check{{Name: "primary", Required: true, Probe: func(ctx context.Context) error { return primary.Ping(ctx) }}}
	for i, u := range c.ReplicaURLs {
		p, err := openPool(ctx, u, c.ReplicaExecMode, 0)
		if err != nil {
			return fmt.Errorf("replica %d pool: %w", i+1, err)
		}
		defer p.Close()
		checks = append(checks, httpapi.Check{Name: fmt.Sprintf("replica%d", i+1), Probe: func(ctx context.Context) error { return p.Ping(ctx) }})
	}
	if c.RedisURL != "" {
		opt, err := redis.ParseURL(c.RedisURL)
		if err != nil {
			return fmt.Errorf("%w: bad Redis URL: %v", errUsage, err)
		}
		rdb := redis.NewClient(opt)
		defer rdb.Close()
		checks = append(checks, httpapi.Check{Name: "cache", Probe: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }})
	}

	store := postgres.New(primary, postgres.Options{})
	key, err := postgres.CursorKey(ctx, primary, os.Getenv("PARLEY_CURSOR_KEY"))
	if err != nil {
		return err
	}
	cursors, err := chat.NewCursorCodec(key)
	if err != nil {
		return err
	}
	api := httpapi.New(httpapi.Config{
		Logger:     log,
		AccessLog:  slog.New(slog.NewJSONHandler(os.Stderr, nil)),
		Gatherer:   reg,
		Registerer: reg,
		Checks:     checks,
		Store:      store,
		Cursors:    cursors,
		AdminToken: c.AdminToken,
	})
	srv := httpapi.NewHTTPServer(c.HTTPAddr, api, log)
	ln, err := net.Listen("tcp", c.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.HTTPAddr, err)
	}
	log.Info("serving", "addr", ln.Addr().String(), "replicas", len(c.ReplicaURLs), "cache", c.RedisURL != "")
	if ready != nil {
		ready(ln.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests", "timeout", c.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}
