package dbrouter

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/postgres"
)

// Targets, the values of the target label and of Read's first result.
const (
	TargetPrimary = "primary"
	TargetReplica = "replica"
	TargetCache   = "cache" // for RecordRead by the cache layer
)

// node is one pool: the primary's or a replica's.
type node struct {
	name     string // "primary", "replica1", … (the pool label)
	pool     *pgxpool.Pool
	execMode pgx.QueryExecMode
	probeCfg *pgx.ConnConfig // for the prober's own connection
}

// openNode builds the pool for url (it connects lazily) and the prober's
// connection config.
func openNode(ctx context.Context, name, target, url, execMode, defaultMode string, maxConns int32, cfg *Config, acquireHist *prometheus.HistogramVec) (*node, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("dbrouter: %s URL: %w", name, err)
	}
	if execMode == "" && !strings.Contains(url, "default_query_exec_mode") {
		execMode = defaultMode
	}
	if execMode != "" {
		m, err := postgres.ParseExecMode(execMode)
		if err != nil {
			return nil, fmt.Errorf("dbrouter: %s: %w", name, err)
		}
		pc.ConnConfig.DefaultQueryExecMode = m
	}
	if maxConns > 0 {
		pc.MaxConns = maxConns
	}
	if pc.MinConns == 0 {
		// A quarter of every pool stays connected, made in the background
		// from the start: a burst on a fresh or idle instance does not pay
		// a connect and authentication per request, which on a busy machine
		// outlasts the short acquire bound (serve's 100 ms). On the primary
		// (through PgBouncer: client connections, no server connection
		// held) a cold pool answered 503 (parley chaos: six 503s on a cold
		// instance); on a replica (a backend each) it sent the first reads
		// of a fresh instance to the primary ("acquire replica1 connection:
		// context deadline exceeded", then the primary's pool wait).
		pc.MinConns = max(1, pc.MaxConns/4)
	}
	if pc.ConnConfig.ConnectTimeout == 0 {
		// Connections are made in the background of an Acquire that gave up;
		// bound them so an unreachable host does not pin pool slots forever.
		pc.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pc.ConnConfig.DialFunc = cleanupDial(pc.ConnConfig.DialFunc, cleanupBound)
	probeCfg := pc.ConnConfig.Copy()
	probeCfg.Tracer = nil
	probeCfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	probeCfg.RuntimeParams["application_name"] = "parley_prober"

	at := &acquireTracer{bound: cfg.AcquireTimeout, hist: acquireHist.WithLabelValues(name)}
	var tracer pgx.QueryTracer = at
	if cfg.Tracer != nil {
		if t := cfg.Tracer(target); t != nil {
			tracer = multitracer.New(t, at)
		}
	}
	pc.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("dbrouter: %s pool: %w", name, err)
	}
	return &node{name: name, pool: pool, execMode: pc.ConnConfig.DefaultQueryExecMode, probeCfg: probeCfg}, nil
}

// acquireTracer times every Acquire of a pool (parley_db_pool_acquire_duration_seconds)
// and bounds its wait: the context it returns to pgxpool carries the
// AcquireTimeout deadline, so Primary().Begin and friends are bounded too.
// Its query hooks do nothing; it is a pgx.QueryTracer only so it can be a
// ConnConfig.Tracer on its own.
type acquireTracer struct {
	bound time.Duration
	hist  prometheus.Observer
}

type acquireStartKey struct{}

type acquireStart struct {
	at     time.Time
	cancel context.CancelFunc
}

func (t *acquireTracer) TraceAcquireStart(ctx context.Context, _ *pgxpool.Pool, _ pgxpool.TraceAcquireStartData) context.Context {
	st := &acquireStart{at: time.Now()}
	if t.bound > 0 {
		ctx, st.cancel = context.WithTimeout(ctx, t.bound)
	}
	return context.WithValue(ctx, acquireStartKey{}, st)
}

func (t *acquireTracer) TraceAcquireEnd(ctx context.Context, _ *pgxpool.Pool, _ pgxpool.TraceAcquireEndData) {
	st, ok := ctx.Value(acquireStartKey{}).(*acquireStart)
	if !ok {
		return
	}
	t.hist.Observe(time.Since(st.at).Seconds())
	if st.cancel != nil {
		st.cancel()
	}
}

func (*acquireTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (*acquireTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// PoolStat is one pool's state, for /admin/status "pools".
type PoolStat struct {
	Name       string  `json:"name"` // "primary", "replica1", …
	ExecMode   string  `json:"exec_mode"`
	Max        int32   `json:"max"`
	InUse      int32   `json:"in_use"`
	Idle       int32   `json:"idle"`
	Total      int32   `json:"total"`      // in use + idle + being opened
	Saturation float64 `json:"saturation"` // in_use / max
	// AcquireCount counts acquires; EmptyAcquireCount those that had to wait
	// for a connection; CanceledAcquireCount those that gave up (the caller's
	// context or the AcquireTimeout bound).
	AcquireCount         int64 `json:"acquire_count"`
	EmptyAcquireCount    int64 `json:"empty_acquire_count"`
	CanceledAcquireCount int64 `json:"canceled_acquire_count"`
}

func (n *node) stat() PoolStat {
	s := n.pool.Stat()
	ps := PoolStat{
		Name: n.name, ExecMode: postgres.ExecModeName(n.execMode),
		Max: s.MaxConns(), InUse: s.AcquiredConns(), Idle: s.IdleConns(), Total: s.TotalConns(),
		AcquireCount: s.AcquireCount(), EmptyAcquireCount: s.EmptyAcquireCount(), CanceledAcquireCount: s.CanceledAcquireCount(),
	}
	if ps.Max > 0 {
		ps.Saturation = float64(ps.InUse) / float64(ps.Max)
	}
	return ps
}
