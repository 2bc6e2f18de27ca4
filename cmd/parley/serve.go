package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/app"
	"github.com/parley-chat/parley/internal/dbrouter"
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
	CachePrefix      string
	PgBouncerAdmin   string
	AdminToken       string
	ShutdownTimeout  time.Duration
	PrimaryPoolConns int
	ReplicaPoolConns int
	MaxReplicaLag    time.Duration
}

// bindServeFlags registers the flags shared by serve and dev.
func bindServeFlags(fs *flag.FlagSet, c *serveConfig) {
	fs.StringVar(&c.HTTPAddr, "http-addr", envString("PARLEY_HTTP_ADDR", "127.0.0.1:8080"), "listen address (env PARLEY_HTTP_ADDR)")
	fs.StringVar(&c.PrimaryExecMode, "primary-exec-mode", envString("PARLEY_PRIMARY_EXEC_MODE", "exec"),
		"pgx query exec mode on the primary pool: exec (safe behind PgBouncer transaction pooling) or cache_statement (direct connections) (env PARLEY_PRIMARY_EXEC_MODE)")
	fs.StringVar(&c.ReplicaExecMode, "replica-exec-mode", envString("PARLEY_REPLICA_EXEC_MODE", "cache_statement"),
		"pgx query exec mode on replica pools (env PARLEY_REPLICA_EXEC_MODE)")
	fs.IntVar(&c.PrimaryPoolConns, "primary-pool-size", envInt("PARLEY_PRIMARY_POOL_SIZE", 20), "max connections in the primary pool (env PARLEY_PRIMARY_POOL_SIZE)")
	fs.IntVar(&c.ReplicaPoolConns, "replica-pool-size", envInt("PARLEY_REPLICA_POOL_SIZE", 20), "max connections in each replica pool (env PARLEY_REPLICA_POOL_SIZE)")
	fs.DurationVar(&c.MaxReplicaLag, "max-replica-lag", envDuration("PARLEY_MAX_REPLICA_LAG", dbrouter.DefaultMaxLag),
		"a replica this far behind (for two probes) stops serving reads until it catches up (env PARLEY_MAX_REPLICA_LAG)")
	fs.StringVar(&c.CachePrefix, "cache-prefix", envString("PARLEY_CACHE_PREFIX", ""), "prefix of every Redis key, e.g. parley: (no braces) (env PARLEY_CACHE_PREFIX)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", envDuration("PARLEY_SHUTDOWN_TIMEOUT", 15*time.Second), "how long graceful shutdown waits for in-flight requests (env PARLEY_SHUTDOWN_TIMEOUT)")
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

// serve runs the API server built by app.New until ctx ends. ready, when
// not nil, receives the listening address once the server accepts
// connections. On shutdown: stop accepting, finish in-flight requests, stop
// the background loops, close the pools and the Redis client.
func serve(ctx context.Context, c serveConfig, ready func(addr string)) error {
	log := slog.Default()
	a, err := app.New(ctx, app.Config{
		PrimaryURL:        c.PrimaryURL,
		PrimaryExecMode:   c.PrimaryExecMode,
		ReplicaURLs:       c.ReplicaURLs,
		ReplicaExecMode:   c.ReplicaExecMode,
		RedisURL:          c.RedisURL,
		CachePrefix:       c.CachePrefix,
		PgBouncerAdminURL: c.PgBouncerAdmin,
		AdminToken:        c.AdminToken,
		CursorKey:         os.Getenv("PARLEY_CURSOR_KEY"),
		PrimaryPoolConns:  c.PrimaryPoolConns,
		ReplicaPoolConns:  c.ReplicaPoolConns,
		MaxReplicaLag:     c.MaxReplicaLag,
		ShutdownTimeout:   c.ShutdownTimeout,
		Logger:            log,
		AccessLog:         slog.New(slog.NewJSONHandler(os.Stderr, nil)),
	})
	if errors.Is(err, app.ErrConfig) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err != nil {
		return err
	}
	defer a.Close()
	a.Start()
	ln, err := net.Listen("tcp", c.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.HTTPAddr, err)
	}
	log.Info("serving", "addr", ln.Addr().String(), "replicas", len(c.ReplicaURLs), "cache", c.RedisURL != "",
		"pgbouncer_monitor", c.PgBouncerAdmin != "")
	if ready != nil {
		ready(ln.Addr().String())
	}
	if err := a.Serve(ctx, ln); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// envDuration returns the environment variable key as a duration, or def
// when unset or malformed.
func envDuration(key string, def time.Duration) time.Duration {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
		slog.Warn("ignoring malformed environment variable", "name", key, "value", v)
	}
	return def
}
