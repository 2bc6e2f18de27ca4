package dbrouter

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/wal"
)

// Reasons, the values of the reason label of parley_db_reads_total: why a
// read went where it went. The set is closed (bounded label values).
const (
	ReasonOK               = "ok"                 // served by a replica
	ReasonDisabled         = "disabled"           // replica not allowed for this request, or none configured
	ReasonStrong           = "strong"             // the caller asked for the primary
	ReasonTokenAhead       = "token_ahead"        // healthy replicas exist but none has replayed the caller's token
	ReasonTokenUnknown     = "token_unknown"      // the caller's write position is unknown (Redis unavailable): any replica may be behind it
	ReasonNoHealthyReplica = "no_healthy_replica" // every replica's breaker is open or half-open: spill-over
	ReasonFallbackError    = "fallback_error"     // the replica failed (connection error, no connection free); retried on the primary
)

// Router owns the primary pool, one pool per replica and their probers, and
// decides per read which node serves it. It is safe for concurrent use.
type Router struct {
	cfg     Config
	log     *slog.Logger
	primary *node
	// primaryProber and primaryDown belong to the primary's prober goroutine.
	primaryProber *prober
	primaryDown   bool
	replicas      []*replica
	history       *walHistory
	geometry      atomic.Pointer[walGeometry]
	metrics       *metrics

	rr            atomic.Uint64 // round-robin start among replicas
	spill         chan struct{} // spill-over slots (nil: unbounded)
	spillInFlight atomic.Int64

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// replica is one replica: its pool, prober, breaker and the routing view.
type replica struct {
	*node
	prober   *prober
	inFlight atomic.Int64
	served   atomic.Int64 // reads it served (parley_replica_reads_total)
	// view is the latest probe's outcome, read lock-free by routing.
	view atomic.Pointer[replicaView]
	mu   sync.Mutex // guards br and the publication of view
	br   *breaker
}

// replicaView is an immutable snapshot of a replica, replaced on every probe.
type replicaView struct {
	breaker    BreakerState
	state      string
	replay     wal.LSN
	receive    wal.LSN
	lagBytes   int64
	lagSeconds float64
	stalled    bool
	probedAt   time.Time
	err        error
}

// New opens the pools (lazily: an unreachable node is not an error here),
// probes every node once, and starts the probers. Close releases it all.
func New(ctx context.Context, cfg Config) (*Router, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &Router{cfg: cfg, log: cfg.Logger, history: newWALHistory(1024), metrics: newMetrics()}
	ok := false
	defer func() {
		if !ok {
			r.closePools()
		}
	}()
	if r.primary, err = openNode(ctx, "primary", TargetPrimary, cfg.PrimaryURL, cfg.PrimaryExecMode, "exec", cfg.PoolMaxConns, &cfg, r.metrics.acquire); err != nil {
		return nil, err
	}
	r.primaryProber = &prober{cfg: r.primary.probeCfg, timeout: cfg.ProbeTimeout}
	for i, u := range cfg.ReplicaURLs {
		maxConns := cfg.ReplicaPoolMaxConns
		if maxConns == 0 {
			maxConns = cfg.PoolMaxConns
		}
		n, err := openNode(ctx, "replica"+strconv.Itoa(i+1), TargetReplica, u, cfg.ReplicaExecMode, "cache_statement", maxConns, &cfg, r.metrics.acquire)
		if err != nil {
			return nil, err
		}
		r.replicas = append(r.replicas, &replica{node: n, prober: &prober{cfg: n.probeCfg, timeout: cfg.ProbeTimeout},
			br: newBreaker(cfg.OpenAfter, cfg.CloseAfter)})
	}
	switch limit := cfg.MaxSpillover; {
	case limit == 0:
		limit = int(r.primary.pool.Config().MaxConns) * 3 / 4
		r.spill = make(chan struct{}, max(limit, 1))
	case limit > 0:
		r.spill = make(chan struct{}, limit)
	}
	if cfg.Registerer != nil {
		if err := r.metrics.register(cfg.Registerer, r); err != nil {
			return nil, err
		}
	}
	for _, rep := range r.replicas {
		for _, s := range []BreakerState{BreakerClosed, BreakerHalfOpen, BreakerOpen} {
			r.metrics.transitions.WithLabelValues(rep.name, s.String())
		}
	}

	// First round, so that routing has a snapshot when New returns: the
	// primary first (the replicas' lag is measured against it).
	pctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.probePrimary(pctx)
	var wg sync.WaitGroup
	for _, rep := range r.replicas {
		wg.Go(func() { r.probeReplica(pctx, rep) })
	}
	wg.Wait()
	r.wg.Go(func() { probeLoop(pctx, cfg.ProbeInterval, r.probePrimary) })
	for _, rep := range r.replicas {
		r.wg.Go(func() {
			probeLoop(pctx, cfg.ProbeInterval, func(ctx context.Context) { r.probeReplica(ctx, rep) })
		})
	}
	ok = true
	return r, nil
}

// Close stops the probers and closes every pool. Metrics stay registered
// (use a fresh Registerer for a new Router).
func (r *Router) Close() {
	r.closeOnce.Do(func() {
		if r.cancel != nil {
			r.cancel()
		}
		r.wg.Wait()
		r.closePools()
	})
}

func (r *Router) closePools() {
	if r.primaryProber != nil {
		r.primaryProber.close()
	}
	if r.primary != nil {
		r.primary.pool.Close()
	}
	for _, rep := range r.replicas {
		rep.prober.close()
		rep.pool.Close()
	}
}

// Primary is the primary pool, for writes. Its Acquire waits are bounded by
// AcquireTimeout; pass its errors through Classify so that the HTTP edge can
// tell "unavailable" (503) from other failures, or use InTx, which does.
func (r *Router) Primary() *pgxpool.Pool { return r.primary.pool }

// pick is the routing decision: the replica to use, or nil and why not. It
// reads only the replicas' latest views (atomics) and never blocks. gated
// says the replica's last probe had not replayed the read's token: the read
// must check the replica's position in its own round trip (checkedRead) and
// go to the primary with reason token_ahead if it is behind.
func (r *Router) pick(o Route) (rep *replica, reason string, gated bool) {
	if !o.ReplicaAllowed || len(r.replicas) == 0 {
		return nil, ReasonDisabled, false
	}
	switch o.Consistency.mode {
	case modeStrong:
		return nil, ReasonStrong, false
	case modeUnknown:
		return nil, ReasonTokenUnknown, false
	}
	n := len(r.replicas)
	start := 0
	if n > 1 {
		start = int(r.rr.Add(1) % uint64(n))
	}
	var best, ahead *replica
	var bestLoad int64
	var aheadReplay wal.LSN
	for i := range n {
		rep := r.replicas[(start+i)%n]
		v := rep.view.Load()
		if v == nil || v.breaker != BreakerClosed {
			continue
		}
		if o.Consistency.mode == modeToken && v.replay < o.Consistency.token {
			// Behind at its last probe; the most advanced of these is the
			// one to check.
			if ahead == nil || v.replay > aheadReplay {
				ahead, aheadReplay = rep, v.replay
			}
			continue
		}
		if load := rep.inFlight.Load(); best == nil || load < bestLoad {
			best, bestLoad = rep, load
		}
	}
	switch {
	case best != nil:
		return best, ReasonOK, false
	case ahead != nil && o.Consistency.token != wal.Unknown && !r.cfg.NoPositionCheck:
		return ahead, ReasonTokenAhead, true
	case ahead != nil:
		return nil, ReasonTokenAhead, false
	}
	return nil, ReasonNoHealthyReplica, false
}

// Read runs fn on the node that route allows: a replica (the one with the
// fewest reads in flight among those whose breaker is closed and, for
// ReadYourWrites, that have replayed the token) when route.ReplicaAllowed,
// else the primary. Reads a replica may serve that go to the primary for
// want of a healthy replica or because the caller's position is unknown
// (PositionUnknown) take a spill-over slot (MaxSpillover). If the replica
// fails with a connection error, or no replica connection is free within AcquireTimeout,
// fn is run again on the primary in the same call (with a spill-over slot
// too), so fn must not keep state
// from a failed attempt (reset what it fills at its start).
//
// It returns the target that served ("primary" or "replica") and fn's error;
// primary unavailability is wrapped in postgres.ErrUnavailable. Each call counts once
// in parley_db_reads_total{endpoint,target,reason}; endpoint must come from
// a small fixed set (it is a label).
func (r *Router) Read(ctx context.Context, endpoint string, route Route, fn func(ctx context.Context, q postgres.Querier) error) (string, error) {
	rep, reason, gated := r.pick(route)
	if rep != nil {
		var token wal.LSN
		if gated {
			token = route.Consistency.token
		}
		err, retry, outcome := r.readReplica(ctx, rep, token, fn)
		if outcome != "" {
			r.metrics.checks.WithLabelValues(endpoint, outcome).Inc()
		}
		if !retry {
			rep.served.Add(1)
			r.metrics.read(endpoint, TargetReplica, ReasonOK)
			return TargetReplica, err
		}
		if outcome == CheckBehind && err == nil {
			reason = ReasonTokenAhead
		} else {
			r.log.Warn("dbrouter: replica read failed, retrying on the primary", "replica", rep.name, "endpoint", endpoint, "err", err)
			reason = ReasonFallbackError
		}
	}
	// Reads meant for a replica that the primary takes for want of one
	// spill over, within MaxSpillover. A replica read that failed does too:
	// in the moments before a failing replica's breaker opens, its reads
	// must not take the connections the primary keeps for writes (parley
	// chaos partition: a send answered 503 at the pool wait while they did).
	switch reason {
	case ReasonNoHealthyReplica, ReasonTokenUnknown, ReasonFallbackError:
		release, err := r.acquireSpill(ctx)
		if err != nil {
			r.metrics.spillRejected.WithLabelValues(endpoint).Inc()
			return TargetPrimary, err
		}
		defer release()
	}
	err := r.onPrimary(ctx, fn)
	r.metrics.read(endpoint, TargetPrimary, reason)
	return TargetPrimary, err
}

// readReplica runs fn on rep; retry says the primary should take the read.
// The attempt — acquiring a connection and fn — is bounded by
// ReplicaReadTimeout: a replica that does not answer within it (a
// black-holed link, a hung node) costs the read that much, not the
// request's whole budget; the read goes to the primary and the timeout
// counts against the replica's breaker. A non-zero token makes it a checked
// read (checkedRead): outcome is then one of the Check* values, and
// CheckBehind with a nil error means that rep had not replayed token within
// ReplicaWait.
func (r *Router) readReplica(ctx context.Context, rep *replica, token wal.LSN, fn func(context.Context, postgres.Querier) error) (err error, retry bool, outcome string) {
	rep.inFlight.Add(1)
	defer rep.inFlight.Add(-1)
	bound := r.cfg.ReplicaReadTimeout
	if token != 0 && r.cfg.ReplicaWait > bound/4 {
		// A wait for replay that long is not the replica failing to
		// answer. A short one (the default 20 ms against 400 ms) fits in
		// the bound: no read waits on a dead link longer than the prober
		// timeout (parley chaos partition: 420 ms with it added).
		bound += r.cfg.ReplicaWait
	}
	rctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	conn, err := rep.pool.Acquire(rctx)
	if err != nil {
		if ctx.Err() != nil {
			return err, false, ""
		}
		if postgres.IsConnectionError(err) {
			r.replicaConnError(rep, err)
		}
		// No connection within the bound (a saturated pool, or a connect
		// that hangs): the primary, without blaming the replica.
		return fmt.Errorf("acquire %s connection: %w", rep.name, err), true, ""
	}
	if token == 0 {
		err = fn(rctx, conn)
	} else {
		outcome, err = r.checkedRead(rctx, rep, conn, token, fn)
	}
	conn.Release()
	if err != nil && ctx.Err() == nil {
		switch {
		case postgres.IsConnectionError(err):
			r.replicaConnError(rep, err)
			return err, true, outcome
		case rctx.Err() != nil:
			r.replicaTimeout(rep, err)
			return fmt.Errorf("%s did not answer within %v: %w", rep.name, bound, err), true, outcome
		case outcome == CheckBehind:
			// The position could not be read (not the read's own error).
			return err, true, outcome
		}
	}
	if outcome == CheckBehind && err == nil {
		return nil, true, outcome
	}
	return err, false, outcome
}

// onPrimary runs fn on a primary connection. A connection error (a pooled
// connection that died with PgBouncer or the primary, before fn could get
// anything back from it) is retried on a new connection, twice at most:
// reads are safe to repeat.
func (r *Router) onPrimary(ctx context.Context, fn func(context.Context, postgres.Querier) error) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = r.onPrimaryOnce(ctx, fn); !postgres.IsConnectionError(err) || ctx.Err() != nil {
			break
		}
	}
	return err
}

func (r *Router) onPrimaryOnce(ctx context.Context, fn func(context.Context, postgres.Querier) error) error {
	conn, err := r.primary.pool.Acquire(ctx)
	if err != nil {
		return postgres.Classify(ctx, fmt.Errorf("acquire primary connection: %w", err))
	}
	defer conn.Release()
	return postgres.Classify(ctx, fn(ctx, conn))
}

// acquireSpill takes a spill-over slot, waiting up to AcquireTimeout.
func (r *Router) acquireSpill(ctx context.Context) (release func(), err error) {
	release = func() { r.spillInFlight.Add(-1) }
	if r.spill != nil {
		select {
		case r.spill <- struct{}{}:
		default:
			t := time.NewTimer(r.cfg.AcquireTimeout)
			defer t.Stop()
			select {
			case r.spill <- struct{}{}:
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-t.C:
				return nil, fmt.Errorf("%w: %d spill-over reads already on the primary (MaxSpillover)", postgres.ErrUnavailable, cap(r.spill))
			}
		}
		release = func() { r.spillInFlight.Add(-1); <-r.spill }
	}
	r.spillInFlight.Add(1)
	return release, nil
}

// InTx runs fn in a transaction on the primary (BEGIN … COMMIT, or ROLLBACK
// if fn fails) and classifies the error (postgres.ErrUnavailable). It never retries:
// after a connection error the commit's outcome is unknown.
func (r *Router) InTx(ctx context.Context, opts pgx.TxOptions, fn func(ctx context.Context, tx pgx.Tx) error) error {
	conn, err := r.primary.pool.Acquire(ctx)
	if err != nil {
		return postgres.Classify(ctx, fmt.Errorf("acquire primary connection: %w", err))
	}
	defer conn.Release()
	return postgres.Classify(ctx, pgx.BeginTxFunc(ctx, conn, opts, func(tx pgx.Tx) error { return fn(ctx, tx) }))
}

// CommitLSN returns the primary's WAL insert position. Called after a commit
// it is a read-your-writes token: a replica that has replayed up to it has
// that commit. (Called inside the transaction it would be too early.)
func (r *Router) CommitLSN(ctx context.Context) (wal.LSN, error) {
	var s string
	if err := r.primary.pool.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&s); err != nil {
		return 0, postgres.Classify(ctx, fmt.Errorf("commit wal.LSN: %w", err))
	}
	l, err := wal.Parse(s)
	if err != nil {
		return 0, err
	}
	return r.NormalizeCommitLSN(l), nil
}

// NormalizeCommitLSN turns a pg_current_wal_insert_lsn() read after a commit
// (on any primary connection, e.g. the write's own) into a token: at a WAL
// page boundary the insert position points past the page header, which a
// caught-up replica never reports as replayed.
func (r *Router) NormalizeCommitLSN(l wal.LSN) wal.LSN {
	return normalizeInsertLSN(l, r.walGeometry())
}

// Ping checks that the primary answers (for /readyz).
func (r *Router) Ping(ctx context.Context) error {
	return postgres.Classify(ctx, r.primary.pool.Ping(ctx))
}

// DeclareEndpoints exports the read counters of these endpoints at zero —
// every reason on the primary, "ok" on a replica, "hit" from the cache, and
// spill-over rejections — so the series exist before the first read.
func (r *Router) DeclareEndpoints(endpoints ...string) {
	for _, e := range endpoints {
		for _, reason := range []string{ReasonDisabled, ReasonStrong, ReasonTokenAhead, ReasonTokenUnknown, ReasonNoHealthyReplica, ReasonFallbackError} {
			r.metrics.reads.WithLabelValues(e, TargetPrimary, reason)
		}
		r.metrics.reads.WithLabelValues(e, TargetReplica, ReasonOK)
		r.metrics.reads.WithLabelValues(e, TargetCache, "hit")
		r.metrics.spillRejected.WithLabelValues(e)
		for _, o := range []string{CheckCaughtUp, CheckWaited, CheckBehind} {
			r.metrics.checks.WithLabelValues(e, o)
		}
	}
}

// RecordRead counts one read in parley_db_reads_total, for reads the router
// did not route itself: the cache layer records its hits with target
// TargetCache. The router's own reads are counted by Read.
func (r *Router) RecordRead(endpoint, target, reason string) {
	r.metrics.read(endpoint, target, reason)
}
