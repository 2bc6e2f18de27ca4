package dbrouter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/wal"
)

// prober owns one node's probe connection: a single connection of its own,
// outside the pool (probes neither wait behind user traffic nor take its
// connections), simple protocol, reconnected after any failure. Each probe is
// one round trip that also works through PgBouncer's transaction pooling:
//
//	BEGIN; SET LOCAL statement_timeout = …; SELECT …; COMMIT
type prober struct {
	cfg     *pgx.ConnConfig
	timeout time.Duration
	conn    *pgx.Conn
}

// query runs sql (one SELECT returning one row) under the probe's statement
// timeout and returns the row's text values.
func (p *prober) query(ctx context.Context, sql string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if p.conn == nil {
		c, err := pgx.ConnectConfig(ctx, p.cfg)
		if err != nil {
			return nil, err
		}
		p.conn = c
	}
	// The server gives up a little before the client does, so that a slow
	// probe fails with 57014 and the connection survives.
	ms := p.timeout.Milliseconds() * 3 / 4
	if ms < 1 {
		ms = 1
	}
	batch := "BEGIN; SET LOCAL statement_timeout = " + strconv.FormatInt(ms, 10) + "; " + sql + "; COMMIT"
	results, err := p.conn.PgConn().Exec(ctx, batch).ReadAll()
	if err == nil && (len(results) != 4 || len(results[2].Rows) != 1) {
		err = fmt.Errorf("probe: unexpected result shape")
	}
	if err != nil {
		p.close()
		return nil, err
	}
	row := results[2].Rows[0]
	out := make([]string, len(row))
	for i, v := range row {
		out[i] = string(v)
	}
	return out, nil
}

func (p *prober) close() {
	if p.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = p.conn.Close(ctx)
		cancel()
		p.conn = nil
	}
}

// jittered returns d ± 20%.
func jittered(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// loop calls probe every ~interval until ctx ends.
func probeLoop(ctx context.Context, interval time.Duration, probe func(context.Context)) {
	t := time.NewTimer(jittered(interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		probe(ctx)
		t.Reset(jittered(interval))
	}
}

// ---- primary ----

const primaryProbeSQL = `SELECT pg_current_wal_insert_lsn()::text`

// probePrimary records the primary's WAL insert position in the history ring.
func (r *Router) probePrimary(ctx context.Context) {
	p := r.primaryProber
	if r.geometry.Load() == nil {
		if g, err := r.readGeometry(ctx); err == nil {
			r.geometry.Store(&g)
		}
	}
	at := time.Now()
	row, err := p.query(ctx, primaryProbeSQL)
	if err == nil {
		var lsn wal.LSN
		if lsn, err = wal.Parse(row[0]); err == nil {
			r.history.record(normalizeInsertLSN(lsn, r.walGeometry()), at)
		}
	}
	failed := err != nil && ctx.Err() == nil
	if failed != r.primaryDown {
		r.primaryDown = failed
		if failed {
			r.log.Warn("dbrouter: primary probe failed", "err", err)
		} else {
			r.log.Info("dbrouter: primary probe ok again")
		}
	}
}

// readGeometry reads the primary's WAL page and segment sizes.
func (r *Router) readGeometry(ctx context.Context) (walGeometry, error) {
	row, err := r.primaryProber.query(ctx, `SELECT current_setting('wal_block_size'), (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')`)
	if err != nil {
		return walGeometry{}, err
	}
	block, err1 := strconv.ParseUint(row[0], 10, 64)
	seg, err2 := strconv.ParseUint(row[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil || block == 0 || seg == 0 {
		return walGeometry{}, fmt.Errorf("wal geometry %q: %w", row, err)
	}
	return walGeometry{block: block, segment: seg}, nil
}

func (r *Router) walGeometry() walGeometry {
	if g := r.geometry.Load(); g != nil {
		return *g
	}
	return defaultGeometry
}

// ---- replicas ----

const replicaProbeSQL = `SELECT pg_is_in_recovery()::text,
  coalesce(pg_last_wal_receive_lsn()::text, ''),
  coalesce(pg_last_wal_replay_lsn()::text, ''),
  CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE 'not paused' END`

// replicaProbe is what one probe of a replica returned.
type replicaProbe struct {
	err        error
	inRecovery bool
	receive    wal.LSN
	replay     wal.LSN
	pauseState string // "not paused", "pause requested" or "paused"
}

func (r *Router) queryReplica(ctx context.Context, rep *replica) replicaProbe {
	row, err := rep.prober.query(ctx, replicaProbeSQL)
	if err != nil {
		return replicaProbe{err: err}
	}
	res := replicaProbe{inRecovery: row[0] == "true", pauseState: row[3]}
	if row[1] != "" {
		if res.receive, err = wal.Parse(row[1]); err != nil {
			return replicaProbe{err: err}
		}
	}
	if row[2] != "" {
		if res.replay, err = wal.Parse(row[2]); err != nil {
			return replicaProbe{err: err}
		}
	}
	return res
}

// probeReplica probes rep, updates its breaker and publishes its new view.
func (r *Router) probeReplica(ctx context.Context, rep *replica) {
	res := r.queryReplica(ctx, rep)
	if ctx.Err() != nil {
		return // shutting down: a cancelled probe says nothing about the replica
	}
	now := time.Now()
	rep.mu.Lock()
	defer rep.mu.Unlock()
	prev := rep.view.Load()
	v := &replicaView{probedAt: now}
	var o observation
	switch {
	case res.err != nil:
		v.state, v.err = StateDown, res.err
		// A probe the replica did not answer at all within ProbeTimeout —
		// its server-side statement_timeout (a little shorter) would have
		// ended a slow one with an error — means a hung node or a dead link:
		// out at once, like a connection error.
		o.connError = postgres.IsConnectionError(res.err) || errors.Is(res.err, context.DeadlineExceeded)
		o.failed = !o.connError
		if prev != nil { // keep the last known position for the status page
			v.replay, v.receive, v.lagBytes, v.lagSeconds = prev.replay, prev.receive, prev.lagBytes, prev.lagSeconds
		}
	case !res.inRecovery:
		v.state, v.err = StateDown, errNotInRecovery
		o.failed = true
	default:
		v.replay, v.receive = res.replay, res.receive
		v.lagBytes, v.lagSeconds = r.history.lag(res.replay, now)
		// Stalled: replay has not moved for a whole probe interval although WAL
		// received before that interval is waiting. A slow replay moves; a
		// stalled one is stuck (e.g. behind a lock conflict with a replica
		// query until max_standby_streaming_delay) and will not serve fresh
		// data, so it opens the breaker at once, like a pause.
		v.stalled = prev != nil && prev.err == nil && prev.replay == res.replay && prev.receive > res.replay
		o.paused = res.pauseState != "not paused"
		o.stalled = v.stalled
		o.overLag = v.lagSeconds >= r.cfg.MaxLag.Seconds() || v.lagBytes >= r.cfg.MaxLagBytes
		o.underHalf = v.lagSeconds < r.cfg.MaxLag.Seconds()/2 && v.lagBytes < r.cfg.MaxLagBytes/2
		switch {
		case o.paused:
			v.state = StatePaused
		case o.overLag || o.stalled:
			v.state = StateLagging
		default:
			v.state = StateHealthy
		}
	}
	from, to := rep.br.observe(o)
	v.breaker = to
	rep.view.Store(v)
	if from != to {
		r.transition(rep, from, to, v)
	}
}

var errNotInRecovery = errors.New("not in recovery (promoted?): not a replica")

// replicaTimeout records a user read that rep did not answer within the
// replica read bound.
func (r *Router) replicaTimeout(rep *replica, err error) {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	from, to := rep.br.userTimeout()
	if from == to {
		return
	}
	v := *rep.view.Load()
	v.breaker, v.err = to, err
	rep.view.Store(&v)
	r.transition(rep, from, to, &v)
}

// replicaConnError records a connection error that a user read got from rep.
func (r *Router) replicaConnError(rep *replica, err error) {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	from, to := rep.br.userConnError()
	if from == to {
		return
	}
	v := *rep.view.Load()
	v.breaker, v.state, v.err = to, StateDown, err
	rep.view.Store(&v)
	r.transition(rep, from, to, &v)
}

// transition exports and logs a breaker change; rep.mu is held.
func (r *Router) transition(rep *replica, from, to BreakerState, v *replicaView) {
	r.metrics.transitions.WithLabelValues(rep.name, to.String()).Inc()
	attrs := []any{"replica", rep.name, "from", from.String(), "to", to.String(), "state", v.state,
		"lag_seconds", v.lagSeconds, "lag_bytes", v.lagBytes, "replay_lsn", v.replay.String()}
	if v.err != nil {
		attrs = append(attrs, "err", v.err)
	}
	if to == BreakerOpen {
		r.log.Warn("dbrouter: replica breaker opened", attrs...)
	} else {
		r.log.Info("dbrouter: replica breaker "+to.String(), attrs...)
	}
}
