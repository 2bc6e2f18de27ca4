package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/parley-chat/parley/internal/app"
	"github.com/parley-chat/parley/internal/chatsvc"
	"github.com/parley-chat/parley/internal/dbrouter"
	"github.com/parley-chat/parley/internal/stack"
)

func init() {
	register(command{name: "serve", summary: "run the API server against external PostgreSQL, replicas and Redis", run: runServe})
}

// serveConfig is everything `parley serve` needs: the server's app.Config
// and where to listen; `parley dev` fills the connections from the local
// stack.
type serveConfig struct {
	app.Config
	HTTPAddr string
	// AccessLogShare is --access-log-sample: the share of requests in the
	// access log, 0–1 (0: none; answers of 500 or more are always logged).
	AccessLogShare float64
	// PrometheusSDFile, when set, is a file-based service discovery file
	// that registers this server with Prometheus while it serves (written
	// once listening, removed on shutdown).
	PrometheusSDFile string
	// logs are the command's flags, whose --log-level and --log-format the
	// access log follows once they are parsed (nil: the default logger's
	// access log, unbuffered).
	logs *flags
}

// bindServeFlags registers the flags shared by serve and dev.
func bindServeFlags(f *flags, c *serveConfig) {
	c.logs = f
	f.String(&c.HTTPAddr, "http-addr", "PARLEY_HTTP_ADDR", "127.0.0.1:8080", "listen address")
	f.String(&c.PrimaryExecMode, "primary-exec-mode", "PARLEY_PRIMARY_EXEC_MODE", "exec",
		"pgx query exec mode on the primary pool: exec (safe behind PgBouncer transaction pooling) or cache_statement (direct connections)")
	f.String(&c.ReplicaExecMode, "replica-exec-mode", "PARLEY_REPLICA_EXEC_MODE", "cache_statement", "pgx query exec mode on replica pools")
	f.Int(&c.PrimaryPoolConns, "primary-pool-size", "PARLEY_PRIMARY_POOL_SIZE", 20, "max connections in the primary pool")
	f.Int(&c.ReplicaPoolConns, "replica-pool-size", "PARLEY_REPLICA_POOL_SIZE", 20, "max connections in each replica pool")
	f.Duration(&c.MaxReplicaLag, "max-replica-lag", "PARLEY_MAX_REPLICA_LAG", dbrouter.DefaultMaxLag,
		"a replica this far behind (for two probes) stops serving reads until it catches up")
	f.Duration(&c.ReplicaWait, "replica-wait", "PARLEY_REPLICA_WAIT", dbrouter.DefaultReplicaWait,
		"how long a read held to a write the replica has not replayed yet waits for it (polling its position) before the primary serves it (0: not at all)")
	f.Duration(&c.AcquireTimeout, "acquire-timeout", "PARLEY_ACQUIRE_TIMEOUT", defaultAcquireTimeout,
		"the longest a request waits for a pooled database connection before it is answered 503 (short: admission control, not the pool, is the queue)")
	f.Duration(&c.RequestTimeout, "request-timeout", "PARLEY_REQUEST_TIMEOUT", defaultRequestTimeout,
		"the longest a request may take; past it the answer is 503")
	f.Duration(&c.DBBudget, "db-budget", "PARLEY_DB_BUDGET", chatsvc.DefaultDBBudget,
		"the database time one request may use (waiting for a connection and its statements); past it the answer is 503 + Retry-After")
	f.Bool(&c.Admission.Enabled, "admission", "PARLEY_ADMISSION", true,
		"admission control: shed /v1 requests beyond an adaptive concurrency limit (per class: reads, writes) with 503 overloaded instead of queueing them")
	f.Int(&c.Admission.InitialLimit, "admission-initial-limit", "PARLEY_ADMISSION_INITIAL_LIMIT", 40, "each class's concurrency limit at start")
	f.Int(&c.Admission.MinLimit, "admission-min-limit", "PARLEY_ADMISSION_MIN_LIMIT", 4, "the lowest each class's concurrency limit goes")
	f.Int(&c.Admission.ReadMaxLimit, "admission-max-read-limit", "PARLEY_ADMISSION_MAX_READ_LIMIT", 0,
		"the highest concurrency limit of reads (0: 4× the larger pool)")
	f.Int(&c.Admission.WriteMaxLimit, "admission-max-write-limit", "PARLEY_ADMISSION_MAX_WRITE_LIMIT", 0,
		"the highest concurrency limit of writes (0: 4× the primary pool; keep the sum over instances within 2× PgBouncer's pool)")
	f.Duration(&c.Admission.MaxLatency, "admission-max-latency", "PARLEY_ADMISSION_MAX_LATENCY", 200*time.Millisecond,
		"a p90 service time above this backs the concurrency limit off")
	f.Duration(&c.Admission.LatencyFloor, "admission-latency-floor", "PARLEY_ADMISSION_LATENCY_FLOOR", 100*time.Millisecond,
		"a p90 service time below this never lowers the concurrency limit, however far above the no-load latency")
	f.Duration(&c.Admission.QueueWait, "admission-queue-wait", "PARLEY_ADMISSION_QUEUE_WAIT", 5*time.Millisecond,
		"the longest a request waits for admission while the queue drains (FIFO)")
	f.Duration(&c.Admission.StandingQueueWait, "admission-standing-queue-wait", "PARLEY_ADMISSION_STANDING_QUEUE_WAIT", 5*time.Millisecond,
		"the longest a request waits for admission once a queue has stood for 100 ms (LIFO)")
	f.String(&c.CachePrefix, "cache-prefix", "PARLEY_CACHE_PREFIX", "", "prefix of every Redis key, e.g. parley: (no braces)")
	f.Secret(&c.CursorKey, "cursor-key", "PARLEY_CURSOR_KEY",
		"key that signs pagination cursors, hex or base64 of 16+ bytes (default: the one stored by parley migrate)")
	f.Duration(&c.ShutdownTimeout, "shutdown-timeout", "PARLEY_SHUTDOWN_TIMEOUT", 15*time.Second, "how long graceful shutdown waits for in-flight requests")
	f.Float(&c.AccessLogShare, "access-log-sample", "PARLEY_ACCESS_LOG_SAMPLE", 1,
		"share of requests written to the access log, 0 to 1 (0: none; answers of 500 or more are always logged)")
}

const serveHelp = `Run the API server. Nothing here assumes the local stack: every connection
is configured by URL. The primary URL may point at PgBouncer (transaction
pooling; keep --primary-exec-mode=exec) or at PostgreSQL directly.

Endpoints: /v1/... (see docs), /healthz, /readyz, /metrics, /admin/...
Logs are JSON by default (--log-format), the access log included.
SIGINT/SIGTERM: stop accepting, finish in-flight requests, close pools.`

func runServe(ctx context.Context, args []string) error {
	f := newFlags("serve", "[flags]", serveHelp, "json")
	var c serveConfig
	bindServeFlags(f, &c)
	f.Secret(&c.PrimaryURL, "primary-url", "PARLEY_PRIMARY_URL", "primary PostgreSQL URL, e.g. postgres://user:pw@host:6432/parley (required)")
	var replicas string
	f.Secret(&replicas, "replica-urls", "PARLEY_REPLICA_URLS", "comma-separated replica URLs (optional)")
	f.Secret(&c.RedisURL, "redis-url", "PARLEY_REDIS_URL", "Redis URL, e.g. redis://host:6379/0 (optional: without it nothing is cached)")
	f.Secret(&c.PgBouncerAdminURL, "pgbouncer-admin-url", "PARLEY_PGBOUNCER_ADMIN_URL", "PgBouncer admin console URL for pool metrics (optional)")
	f.Secret(&c.AdminToken, "admin-token", "PARLEY_ADMIN_TOKEN", "bearer token for admin endpoints (required)")
	f.String(&c.PrometheusSDFile, "prometheus-sd-file", "PARLEY_PROMETHEUS_SD_FILE", "",
		"register with Prometheus while serving: write this file-based service discovery file (e.g. <data dir>/prometheus/targets/NAME.json of a local stack) and remove it on shutdown (optional)")
	if err := f.Parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, f.Args())
	}
	c.ReplicaURLs = splitList(replicas, ",")
	if c.PrimaryURL == "" {
		return fmt.Errorf("%w: --primary-url (or PARLEY_PRIMARY_URL) is required", errUsage)
	}
	if c.AdminToken == "" {
		return fmt.Errorf("%w: --admin-token (or PARLEY_ADMIN_TOKEN) is required", errUsage)
	}
	if err := c.finish(); err != nil {
		return err
	}
	return serve(ctx, c, nil)
}

// The serve defaults of the pool's wait bound and the request deadline are
// shorter than the packages' (dbrouter.DefaultAcquireTimeout,
// httpapi.DefaultRequestTimeout): with admission control in front, a request
// that waits long for a connection is a drop that lowers the limit, not the
// queue (docs/runbooks.md#overload).
const (
	defaultAcquireTimeout = 100 * time.Millisecond
	defaultRequestTimeout = 2 * time.Second
)

// finish checks the configuration the flags made (validate) and turns it
// into app.Config's terms: --replica-wait 0 (no wait) becomes a negative
// value (app.Config's zero is the default).
func (c *serveConfig) finish() error {
	if err := c.validate(); err != nil {
		return err
	}
	if c.ReplicaWait == 0 {
		c.ReplicaWait = -1
	}
	return nil
}

// validate checks the values the flags cannot.
func (c serveConfig) validate() error {
	switch {
	case c.AccessLogShare < 0 || c.AccessLogShare > 1:
		return fmt.Errorf("%w: --access-log-sample must be between 0 and 1, got %g", errUsage, c.AccessLogShare)
	case c.PrimaryPoolConns < 1 || c.ReplicaPoolConns < 1:
		return fmt.Errorf("%w: pool sizes must be at least 1", errUsage)
	case c.ShutdownTimeout <= 0 || c.RequestTimeout <= 0 || c.DBBudget <= 0 || c.AcquireTimeout <= 0 || c.MaxReplicaLag <= 0:
		return fmt.Errorf("%w: timeouts and --max-replica-lag must be positive", errUsage)
	case c.Admission.InitialLimit < 1 || c.Admission.MinLimit < 1 || c.Admission.ReadMaxLimit < 0 || c.Admission.WriteMaxLimit < 0 ||
		c.Admission.MaxLatency <= 0 || c.Admission.LatencyFloor <= 0 || c.Admission.QueueWait <= 0 || c.Admission.StandingQueueWait <= 0:
		return fmt.Errorf("%w: admission limits must be at least 1 (the maxima 0 for the default) and its durations positive", errUsage)
	}
	return nil
}

// serve runs the API server built by app.New until ctx ends. ready, when
// not nil, receives the listening address once the server accepts
// connections. On shutdown: stop accepting, finish in-flight requests, stop
// the background loops, close the pools and the Redis client.
func serve(ctx context.Context, c serveConfig, ready func(addr string)) error {
	log := slog.Default()
	cfg := c.Config
	cfg.Logger = log
	cfg.AccessLogSample = accessLogSample(c.AccessLogShare)
	if cfg.AccessLog == nil && c.logs != nil {
		// The access log's lines are buffered (one write per 64 KiB or
		// 100 ms, not one per request), in the process's log format.
		lb := newLineBuffer(os.Stderr)
		defer lb.Close()
		if al, err := newLogger(lb, c.logs.logLevel, c.logs.logFormat); err == nil {
			cfg.AccessLog = al
		}
	}
	a, err := app.New(ctx, cfg)
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
		"pgbouncer_monitor", c.PgBouncerAdminURL != "")
	if c.PrometheusSDFile != "" {
		if err := stack.WriteTargetFile(c.PrometheusSDFile, ln.Addr().String(), nil); err != nil {
			ln.Close()
			return err
		}
		defer os.Remove(c.PrometheusSDFile)
		log.Info("registered with Prometheus", "sd_file", c.PrometheusSDFile)
	}
	if ready != nil {
		ready(ln.Addr().String())
	}
	if err := a.Serve(ctx, ln); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// accessLogSample is app.Config's form of the flag (0 there means "all").
func accessLogSample(v float64) float64 {
	if v == 0 {
		return -1
	}
	return v
}
