package dbrouter

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/postgres"
)

// Config configures a Router. Only PrimaryURL is required; every other zero
// value takes the default named on its field.
type Config struct {
	// PrimaryURL is the primary, direct or through PgBouncer.
	PrimaryURL string
	// PrimaryExecMode is pgx's query exec mode for the primary pool: "exec"
	// (default: safe through PgBouncer's transaction pooling, which has no
	// protocol-level prepared statements) or "cache_statement" (prepared
	// statements, 20–160% faster on a direct connection). "cache_describe",
	// "describe_exec" and "simple_protocol" are accepted too. When empty, a
	// default_query_exec_mode parameter in the URL is honoured.
	PrimaryExecMode string
	// ReplicaURLs are the replicas, direct; one pool and one prober each.
	// They are named "replica1", "replica2", … in that order (metric labels);
	// blank entries are ignored.
	ReplicaURLs []string
	// ReplicaExecMode is the replicas' exec mode (default "cache_statement").
	ReplicaExecMode string
	// PoolMaxConns caps the primary pool (0: the URL's pool_max_conns, else
	// pgx's default). ReplicaPoolMaxConns caps each replica pool (0: the same
	// rule).
	PoolMaxConns        int32
	ReplicaPoolMaxConns int32
	// AcquireTimeout bounds the wait for a pooled connection, on every pool
	// and for every caller (default 2s). Past it the call fails with
	// postgres.ErrUnavailable (primary) or falls back to the primary (replica).
	AcquireTimeout time.Duration

	// MaxLag and MaxLagBytes are the lag thresholds (default 5s and 16 MiB):
	// a replica at or over either for OpenAfter consecutive probes is taken
	// out; it is re-admitted after CloseAfter consecutive probes under half of
	// both.
	MaxLag      time.Duration
	MaxLagBytes int64
	OpenAfter   int // default 2
	CloseAfter  int // default 3
	// ProbeInterval is the mean time between two probes of a node (default
	// 500ms, ±20% jitter); ProbeTimeout bounds one probe, connecting included,
	// and is its statement_timeout (default 400ms).
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// ReplicaReadTimeout bounds one read's attempt on a replica (acquiring a
	// connection and the statements; default ProbeTimeout): past it the read
	// is run on the primary and the replica's breaker counts a failure. A
	// ReplicaWait of more than a quarter of it is added for reads that wait
	// for replay; a shorter one waits within it.
	ReplicaReadTimeout time.Duration
	// ReplicaWait bounds how long a read held to a token that no replica had
	// replayed at its last probe waits for the replica to replay it (polling
	// its position on the read's connection) before it goes to the primary
	// (default 20ms; negative: no wait, only the check in the read's own
	// round trip). NoPositionCheck turns the check off: such reads go to the
	// primary at once, as the probe's position says.
	ReplicaWait     time.Duration
	NoPositionCheck bool
	// MaxSpillover bounds how many reads meant for replicas may run on the
	// primary at once while no replica is healthy or the reader's write
	// position is unknown (PositionUnknown: a Redis outage) (0: three
	// quarters of the primary pool; negative: no bound). A read over the bound waits up to
	// AcquireTimeout for a slot, then fails with postgres.ErrUnavailable, so the
	// primary keeps connections for writes.
	MaxSpillover int

	// Registerer receives the router's metrics (nil: not exported).
	Registerer prometheus.Registerer
	// Logger receives breaker transitions and fallbacks (nil: slog.Default()).
	Logger *slog.Logger
	// Tracer, if set, returns the query tracer for a pool's connections;
	// target is "primary" or "replica". Probes are not traced.
	Tracer func(target string) pgx.QueryTracer
}

// Defaults.
const (
	DefaultAcquireTimeout = 2 * time.Second
	DefaultMaxLag         = 5 * time.Second
	DefaultMaxLagBytes    = 16 << 20
	DefaultOpenAfter      = 2
	DefaultCloseAfter     = 3
	DefaultProbeInterval  = 500 * time.Millisecond
	DefaultProbeTimeout   = 400 * time.Millisecond
	DefaultReplicaWait    = 20 * time.Millisecond
)

func (c Config) withDefaults() (Config, error) {
	if c.PrimaryURL == "" {
		return c, errors.New("dbrouter: PrimaryURL is required")
	}
	setDur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	setDur(&c.AcquireTimeout, DefaultAcquireTimeout)
	setDur(&c.MaxLag, DefaultMaxLag)
	setDur(&c.ProbeInterval, DefaultProbeInterval)
	setDur(&c.ProbeTimeout, DefaultProbeTimeout)
	setDur(&c.ReplicaReadTimeout, c.ProbeTimeout)
	if c.ReplicaWait == 0 {
		c.ReplicaWait = DefaultReplicaWait
	}
	if c.MaxLagBytes <= 0 {
		c.MaxLagBytes = DefaultMaxLagBytes
	}
	if c.OpenAfter <= 0 {
		c.OpenAfter = DefaultOpenAfter
	}
	if c.CloseAfter <= 0 {
		c.CloseAfter = DefaultCloseAfter
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	// Blank entries (a trailing comma in PARLEY_REPLICA_URLS) would parse as
	// "localhost with defaults": drop them.
	urls := make([]string, 0, len(c.ReplicaURLs))
	for _, u := range c.ReplicaURLs {
		if strings.TrimSpace(u) != "" {
			urls = append(urls, u)
		}
	}
	c.ReplicaURLs = urls
	for _, m := range []string{c.PrimaryExecMode, c.ReplicaExecMode} {
		if m == "" {
			continue
		}
		if _, err := postgres.ParseExecMode(m); err != nil {
			return c, fmt.Errorf("dbrouter: %w", err)
		}
	}
	return c, nil
}
