package cache

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/parley-chat/parley/internal/wal"
)

// DefaultTokenTTL is Config.TokenTTL's default.
const DefaultTokenTTL = time.Minute

// Config tunes a Cache. Zero fields take the defaults.
type Config struct {
	// TTL of cached values (default 5 min). Invalidation is explicit; the TTL
	// bounds memory and the staleness after a lost invalidation.
	TTL time.Duration
	// GenerationTTL of generation records, refreshed by every write to the
	// owner (default 24 h).
	GenerationTTL time.Duration
	// OpTimeout bounds each Redis round trip on the request path (default 30 ms).
	OpTimeout time.Duration
	// LeaseTTL is how long a filler holds a key's lease (default 200 ms).
	LeaseTTL time.Duration
	// LeaseWait is how long a request that did not get the lease polls for
	// the value before it queries the database itself (default 50 ms).
	LeaseWait time.Duration
	// MaxValueBytes: larger values are served but not stored (default 1 MiB).
	MaxValueBytes int
	// BreakerFailures consecutive failed operations open the breaker (default 5).
	BreakerFailures int
	// ProbeInterval is how often Run probes Redis — by refreshing the cache
	// epoch, which also tells an idle instance that Redis is gone — and
	// replays queued invalidations and tokens (default 250 ms, at most
	// EpochTTL/5). While writes wait for their delivery it probes every
	// 10 ms.
	ProbeInterval time.Duration
	// MaxPending bounds the queue of invalidations waiting for Redis (default
	// 100000). Beyond it this instance bypasses the cache for TTL.
	MaxPending int
	// Prefix is put before every key (e.g. "parley:"); it must not contain
	// braces, which would change the Redis Cluster hash tag.
	Prefix string
	// EpochTTL is how long the cache epoch outlives its last refresh
	// (default 1 s). Every instance refreshes it every EpochTTL/5 and serves
	// nothing from Redis more than 0.9 × EpochTTL after its last successful
	// refresh; when nobody could refresh it (Redis hung or unreachable from
	// every instance for EpochTTL) it lapses, and the next epoch makes every
	// value and record written before unreachable. A write whose token or
	// invalidation could not be delivered is acknowledged only once it has
	// been, or once Redis has been unreachable from this instance for
	// OpTimeout + 1.1 × EpochTTL (the epoch has lapsed): the longest a send
	// can wait at the start of a Redis outage.
	EpochTTL time.Duration
	// TokenTTL is how long a user's read-your-writes token lives after their
	// last write (default DefaultTokenTTL). It only has to outlast
	// replication: a replica further behind is taken out by its breaker
	// (5 s by default) long before.
	TokenTTL time.Duration
	// Position returns the primary's current WAL position (after a commit:
	// at least the commit's). The cache calls it, once per owner record,
	// to give a record it created a floor: a position at least that of every
	// write acknowledged before the record existed (see doc.go). Nil: no
	// floors, so a new record's owner fills from the primary only and a user
	// whose record is younger than TokenTTL has an unknown position.
	Position func(ctx context.Context) (wal.LSN, error)

	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics are not registered
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.TTL, 5*time.Minute)
	def(&c.GenerationTTL, 24*time.Hour)
	def(&c.OpTimeout, 30*time.Millisecond)
	def(&c.LeaseTTL, 200*time.Millisecond)
	def(&c.LeaseWait, 50*time.Millisecond)
	def(&c.ProbeInterval, 250*time.Millisecond)
	def(&c.EpochTTL, time.Second)
	def(&c.TokenTTL, DefaultTokenTTL)
	c.ProbeInterval = min(c.ProbeInterval, c.EpochTTL/5)
	if c.MaxValueBytes <= 0 {
		c.MaxValueBytes = 1 << 20
	}
	if c.BreakerFailures <= 0 {
		c.BreakerFailures = 5
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 100000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if strings.ContainsAny(c.Prefix, "{}") {
		panic(fmt.Sprintf("cache: Config.Prefix %q must not contain braces (Redis Cluster hash tags)", c.Prefix))
	}
	return c
}

// ClientOptions returns go-redis options for a cache client on addrs (one
// address: a single node; several: a cluster seed list; with masterName: a
// Sentinel set). They make a dead Redis cheap: context deadlines are honoured
// on the socket, no command retries, one quick dial attempt, and a pool wait
// no longer than a request's Redis budget.
func ClientOptions(addrs []string, masterName string) *redis.UniversalOptions {
	return &redis.UniversalOptions{
		Addrs:                 addrs,
		MasterName:            masterName,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1, // a retry doubles the cost of a failing Redis
		DialTimeout:           200 * time.Millisecond,
		DialerRetries:         1,
		ReadTimeout:           100 * time.Millisecond,
		WriteTimeout:          100 * time.Millisecond,
		PoolTimeout:           50 * time.Millisecond,
		DisableIdentity:       true, // no CLIENT SETINFO round trip per new connection
		// No CLIENT MAINT_NOTIFICATIONS handshake either (go-redis tries it
		// by default on RESP3 connections; Redis OSS 7.0 answers it with an
		// ERR on every new connection, counted in INFO errorstats).
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
}

// NewClient parses a redis:// URL and returns a client with ClientOptions:
// redis://[[user]:password@]host:port[/db] for a single node, or
// redis://host1:port?addr=host2:port&addr=host3:port for a cluster.
func NewClient(url string) (redis.UniversalClient, error) {
	if strings.Contains(url, "addr=") {
		o, err := redis.ParseClusterURL(url)
		if err != nil {
			return nil, fmt.Errorf("redis cluster URL: %w", err)
		}
		u := ClientOptions(o.Addrs, "")
		u.Username, u.Password, u.TLSConfig = o.Username, o.Password, o.TLSConfig
		return redis.NewClusterClient(u.Cluster()), nil
	}
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis URL: %w", err)
	}
	u := ClientOptions([]string{o.Addr}, "")
	u.DB, u.Username, u.Password, u.TLSConfig = o.DB, o.Username, o.Password, o.TLSConfig
	return redis.NewClient(u.Simple()), nil
}

// RedisLogger adapts log for go-redis's process-wide internal logger, which
// otherwise prints every failed dial to stderr:
//
//	redis.SetLogger(cache.RedisLogger(log))
//
// Its lines go out at debug level: the breaker already logs the outage once.
func RedisLogger(log *slog.Logger) interface {
	Printf(ctx context.Context, format string, v ...any)
} {
	return redisLogger{log}
}

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}
