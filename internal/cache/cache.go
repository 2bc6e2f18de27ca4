package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/internal/wal"
)

// Cache is a Redis cache-aside with generation invalidation, fill leases and
// a breaker. It is safe for concurrent use. Run must be running for the
// breaker to close again after Redis failed.
type Cache struct {
	client redis.UniversalClient // nil: no Redis, everything bypasses
	cfg    Config
	ks     keyspace
	log    *slog.Logger
	m      *metrics
	br     breaker

	flights    flights
	pending    pendingSet
	tokensOwed pendingTokens

	born       time.Time // clock's origin
	view       atomic.Pointer[view]
	validFor   int64         // nanoseconds a refreshed view may be used
	refreshing refreshGroup  // inline refreshes of an expired view
	kick       chan struct{} // asks Run to probe now
	// forceEpoch: invalidations were dropped (queue overflow); Run starts a
	// new epoch as soon as Redis answers.
	forceEpoch atomic.Bool

	// Script arguments, converted once.
	leaseMs, genTTLMs, epochTTLms, tokenTTLms any
}

// Fill tells a fill function what its value is for.
type Fill struct {
	// Store: the value will be cached if the fill returns cacheable = true.
	// When false (bypass, Redis error) the cacheable result is ignored and
	// the fill may route as it likes.
	Store bool
	// MinLSN, with Store: the value is cacheable only if it was read from the
	// primary or from a replica whose replay position is at least MinLSN
	// (the owner's last write position, and its record's floor).
	// wal.Unknown: only a read from the primary is cacheable. Route the fill
	// accordingly (e.g. a read-your-writes consistency at max(MinLSN, the
	// user's token); the primary when unknown).
	MinLSN wal.LSN
	// Generation the value will be stored under (for logs and tests).
	Generation int64
}

// FillFunc reads a value from the database. It returns cacheable = true
// only if the read obeyed Fill.MinLSN (and the value is fit for every user
// who may read the key). The cache never modifies the returned bytes; values
// served from the cache or shared between requests must not be modified by
// callers either.
type FillFunc func(ctx context.Context, f Fill) (value []byte, cacheable bool, err error)

// New returns a cache on client (build it with NewClient or ClientOptions so
// that deadlines are honoured on the socket). A nil client makes a cache
// that always bypasses and knows no token: every user's position is
// unknown, so reads that could use a replica go to the primary.
func New(client redis.UniversalClient, cfg Config) *Cache {
	cfg = cfg.withDefaults()
	c := &Cache{
		client:     client,
		cfg:        cfg,
		ks:         keyspace{prefix: cfg.Prefix},
		log:        cfg.Logger.With("component", "cache"),
		m:          newMetrics(cfg.Registerer),
		born:       time.Now(),
		validFor:   int64(cfg.EpochTTL) * 9 / 10,
		kick:       make(chan struct{}, 1),
		leaseMs:    strconv.FormatInt(max(cfg.LeaseTTL.Milliseconds(), 1), 10),
		genTTLMs:   strconv.FormatInt(max(cfg.GenerationTTL.Milliseconds(), 1), 10),
		epochTTLms: strconv.FormatInt(max(cfg.EpochTTL.Milliseconds(), 1), 10),
		tokenTTLms: strconv.FormatInt(max(cfg.TokenTTL.Milliseconds(), 1), 10),
	}
	c.br.threshold = int32(cfg.BreakerFailures)
	c.br.onChange = c.breakerChanged
	if client == nil {
		c.br.open.Store(true)
	} else {
		c.m.up.Set(1)
		c.warnOnSlowClient()
	}
	return c
}

// DeclareEndpoints exports parley_cache_requests_total for these endpoints
// and every result at zero, so the series exist before the first request.
func (c *Cache) DeclareEndpoints(endpoints ...string) {
	for _, e := range endpoints {
		c.m.counters(e)
	}
}

// Up reports whether Redis is in use (breaker closed): cache.state "up" in
// /admin/status. A down cache degrades readiness but does not fail it.
func (c *Cache) Up() bool { return c.client != nil && c.br.allow() }

// Ping checks Redis directly (for /readyz), bypassing the breaker.
func (c *Cache) Ping(ctx context.Context) error {
	if c.client == nil {
		return fmt.Errorf("%w: no Redis configured", ErrUnavailable)
	}
	return c.client.Ping(ctx).Err()
}

// ErrUnavailable: Redis cannot be used right now (breaker open, error,
// timeout, no current epoch) or cannot say what was asked: a token is then
// unknown, a write's token or invalidation queued. GetOrFill never returns
// it: it fails open.
var ErrUnavailable = errors.New("cache: redis unavailable")

// GetOrFill returns the value of key: from Redis on a hit, else from fill,
// storing the fill's value under the generation read before the fill when
// the fill says it is cacheable. Redis problems never surface as errors:
// the fill serves the request (result ResultError or ResultBypass). The
// error returned is the fill's (or ctx's while waiting for another
// request's fill). fill is called at most once, and not at all on ResultHit.
//
// Nothing is read from Redis without a current epoch (see doc.go,
// "Outages"): after an outage, the first request refreshes it, and a record
// of an older epoch is reset instead of used.
func (c *Cache) GetOrFill(ctx context.Context, endpoint string, key Key, fill FillFunc) ([]byte, Result, error) {
	ctr := c.m.counters(endpoint)
	if !c.br.allow() {
		return c.bypass(ctx, ctr, fill)
	}
	epoch, ok := c.currentEpoch(ctx)
	if !ok {
		return c.bypass(ctx, ctr, fill)
	}
	tag := key.tag()
	genKey := c.ks.prefix + tag + ":gen"
	if c.pending.blocks(genKey) {
		return c.bypass(ctx, ctr, fill)
	}
	head, tail := c.ks.prefix+tag+":"+key.kind+":g", ":"+key.params
	lk, err := c.lookup(ctx, genKey, head, tail, epoch)
	if err != nil {
		ctr[ResultError].Inc()
		v, _, err := fill(ctx, Fill{})
		return v, ResultError, err
	}
	if lk.staleEpoch {
		c.expireView(epoch)
		return c.bypass(ctx, ctr, fill)
	}
	if lk.value != nil {
		ctr[ResultHit].Inc()
		return lk.value, ResultHit, nil
	}
	v, res, err := c.miss(ctx, lk, fill)
	ctr[res].Inc()
	return v, res, err
}

func (c *Cache) bypass(ctx context.Context, ctr *[numResults]prometheus.Counter, fill FillFunc) ([]byte, Result, error) {
	ctr[ResultBypass].Inc()
	v, _, err := fill(ctx, Fill{})
	return v, ResultBypass, err
}

// lookup is the result of lookupScript.
type lookup struct {
	genKey  string
	dataKey string
	fill    Fill
	value   []byte
	leased  bool
	// The record's write position (0: none), floor (0: none yet) and
	// creation time, for the fill's MinLSN (minLSN).
	written, floor wal.LSN
	created        string
	// staleEpoch: the record belongs to a newer epoch than this instance's.
	staleEpoch bool
}

func (c *Cache) lookup(ctx context.Context, genKey, head, tail, epoch string) (lookup, error) {
	octx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout)
	defer cancel()
	r, err := lookupScript.Run(octx, c.client, []string{genKey}, head, tail, c.leaseMs, c.genTTLMs, epoch).Slice()
	c.observe(ctx, "lookup", err)
	if err != nil {
		return lookup{}, err
	}
	switch len(r) {
	case 0:
		return lookup{staleEpoch: true}, nil
	case 2: // a hit
		v, _ := r[1].(string)
		return lookup{value: []byte(v)}, nil
	case 6:
	default:
		return lookup{}, fmt.Errorf("cache lookup: unexpected reply %v", r)
	}
	gen, _ := r[0].(string)
	g, err := strconv.ParseInt(gen, 10, 64)
	if err != nil {
		return lookup{}, fmt.Errorf("cache lookup: generation %q: %w", gen, err)
	}
	lk := lookup{genKey: genKey, dataKey: head + gen + tail, fill: Fill{Store: true, Generation: g, MinLSN: wal.Unknown}}
	if l, ok := r[2].(string); ok {
		if pos, err := wal.Parse(l); err == nil && pos != 0 {
			lk.written = pos
		} else {
			lk.written = wal.Unknown
		}
	}
	if f, ok := r[3].(string); ok {
		if pos, err := wal.Parse(f); err == nil {
			lk.floor = max(pos, 1)
		}
	}
	lk.created, _ = r[4].(string)
	leased, _ := r[5].(int64)
	lk.leased = leased == 1
	return lk, nil
}

// minLSN is the position a fill of lk must have read at to be cacheable:
// the owner's last write position and its record's floor, established now
// if the record has none (Config.Position); wal.Unknown (the primary only)
// when either is unknown.
func (c *Cache) minLSN(ctx context.Context, lk lookup) wal.LSN {
	if lk.written == wal.Unknown {
		return wal.Unknown
	}
	f := lk.floor
	if f == 0 {
		var err error
		if f, err = c.establishFloor(ctx, lk.genKey, lk.created); err != nil {
			return wal.Unknown
		}
	}
	return max(lk.written, f)
}

// establishFloor gives the record genKey (created at created) its floor: the
// primary's position now, which is at least that of every write
// acknowledged before the record existed. It returns the record's floor
// (another request's, if it was first).
func (c *Cache) establishFloor(ctx context.Context, genKey, created string) (wal.LSN, error) {
	if c.cfg.Position == nil || created == "" {
		return 0, fmt.Errorf("%w: no floor for %s", ErrUnavailable, genKey)
	}
	p, err := c.cfg.Position(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: primary position for a floor: %w", ErrUnavailable, err)
	}
	p = max(p, 1)
	octx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout)
	defer cancel()
	v, err := floorScript.Run(octx, c.client, []string{genKey}, created, p.String()).Text()
	c.observe(ctx, "floor", err)
	if err != nil {
		return 0, fmt.Errorf("%w: floor of %s: %w", ErrUnavailable, genKey, err)
	}
	f, err := wal.Parse(v)
	if err != nil {
		return 0, fmt.Errorf("%w: floor of %s: %w", ErrUnavailable, genKey, err)
	}
	return max(f, 1), nil
}

// miss serves a lookup that found no value. The request that took the
// Redis lease fills. The other requests of this process for the same key
// (and generation) share one flight: its leader waits for the lease holder's
// value — the local one's through the flight, another instance's by polling
// Redis for up to LeaseWait — and else fills itself; the followers take the
// leader's value.
func (c *Cache) miss(ctx context.Context, lk lookup, fill FillFunc) ([]byte, Result, error) {
	fl, leader := c.flights.join(lk.dataKey)
	switch {
	case lk.leased && !leader:
		// A request that looked the key up just before us leads the flight
		// and is waiting: fill and complete the flight for it.
		fl.localFiller.Store(true)
		v, ok, err := c.fillAndStore(ctx, lk, fill, true)
		fl.complete(v, ok)
		return v, ResultMiss, err
	case !leader:
		select {
		case <-fl.done:
			if fl.shared {
				return fl.val, ResultHit, nil
			}
			v, _, err := c.fillAndStore(ctx, lk, fill, false)
			return v, ResultMiss, err
		case <-ctx.Done():
			return nil, ResultMiss, ctx.Err()
		}
	}
	var (
		val    []byte
		shared bool
	)
	defer func() { c.flights.land(lk.dataKey, fl, val, shared) }()
	if !lk.leased {
		if v, ok := c.await(ctx, lk.dataKey, fl); ok {
			val, shared = v, true
			return v, ResultHit, nil
		}
	}
	v, ok, err := c.fillAndStore(ctx, lk, fill, lk.leased)
	val, shared = v, ok
	return v, ResultMiss, err
}

// fillAndStore fills and stores a cacheable value (releasing the lease of
// one that is not); ok reports a value that was stored.
func (c *Cache) fillAndStore(ctx context.Context, lk lookup, fill FillFunc, leased bool) (v []byte, ok bool, err error) {
	lk.fill.MinLSN = c.minLSN(ctx, lk)
	v, cacheable, err := fill(ctx, lk.fill)
	if err == nil && cacheable && len(v) <= c.cfg.MaxValueBytes {
		c.store(ctx, lk.dataKey, v, leased)
		return v, true, nil
	}
	if leased {
		c.release(ctx, lk.dataKey)
	}
	return v, false, err
}

// pollEvery is how often a request without the lease looks for the value.
const pollEvery = 5 * time.Millisecond

// await waits for the lease holder's value: through the flight when the
// holder is in this process, else by polling Redis for up to LeaseWait.
func (c *Cache) await(ctx context.Context, dataKey string, fl *flight) ([]byte, bool) {
	deadline := time.Now().Add(c.cfg.LeaseWait)
	t := time.NewTimer(pollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, false
		case <-fl.done:
			return fl.val, fl.shared
		case <-t.C:
		}
		if fl.localFiller.Load() {
			continue // no new timer: wait for the local lease holder to complete the flight
		}
		octx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout)
		v, err := c.client.Get(octx, dataKey).Bytes()
		cancel()
		c.observe(ctx, "poll", err)
		if err == nil {
			return v, true
		}
		if !errors.Is(err, redis.Nil) {
			return nil, false
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, false
		}
		t.Reset(min(pollEvery, left))
	}
}

func (c *Cache) store(ctx context.Context, dataKey string, v []byte, leased bool) {
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.OpTimeout)
	defer cancel()
	_, err := c.client.Pipelined(octx, func(p redis.Pipeliner) error {
		p.Set(octx, dataKey, v, c.cfg.TTL)
		if leased {
			p.Del(octx, leaseKey(dataKey))
		}
		return nil
	})
	c.observe(ctx, "store", err)
}

// release drops a lease whose fill is not cached, so that the next request
// need not wait for it to expire.
func (c *Cache) release(ctx context.Context, dataKey string) {
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.OpTimeout)
	defer cancel()
	c.observe(ctx, "store", c.client.Del(octx, leaseKey(dataKey)).Err())
}

// observe feeds the breaker: a failed or timed-out operation counts unless
// the caller gave up (its context ended), which says nothing about Redis.
func (c *Cache) observe(parent context.Context, op string, err error) {
	if err == nil || errors.Is(err, redis.Nil) {
		c.br.success()
		return
	}
	if parent.Err() != nil {
		return
	}
	c.m.errors.WithLabelValues(op).Inc()
	c.br.failure(c.clock())
}

func (c *Cache) breakerChanged(open bool, downFor time.Duration) {
	if open {
		c.m.up.Set(0)
		c.log.Warn("redis unavailable: cache bypassed until it answers again",
			"failures", c.cfg.BreakerFailures)
		return
	}
	c.m.up.Set(1)
	c.log.Info("redis available again: cache in use", "down_for", downFor.Round(time.Millisecond))
}

// warnOnSlowClient logs when the client would make a dead Redis expensive.
func (c *Cache) warnOnSlowClient() {
	var ctxTimeouts bool
	var read time.Duration
	switch cl := c.client.(type) {
	case *redis.Client:
		ctxTimeouts, read = cl.Options().ContextTimeoutEnabled, cl.Options().ReadTimeout
	case *redis.ClusterClient:
		ctxTimeouts, read = cl.Options().ContextTimeoutEnabled, cl.Options().ReadTimeout
	default:
		return
	}
	if !ctxTimeouts && (read <= 0 || read > 4*c.cfg.OpTimeout) {
		c.log.Warn("redis client ignores context deadlines and has a long read timeout; a hung Redis will cost requests up to the read timeout (use cache.ClientOptions)",
			"read_timeout", read)
	}
}

// Run probes Redis in the background until ctx ends, every ProbeInterval
// (at once when asked: a request found its epoch view out of date, a write
// waits for its delivery): it refreshes the cache epoch — which also keeps
// the epoch alive for every instance — and replays the invalidations and
// tokens queued while Redis failed; while the breaker is open it closes it
// once Redis answers and the queue is replayed.
func (c *Cache) Run(ctx context.Context) {
	if c.client == nil {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(c.cfg.ProbeInterval)
	defer t.Stop()
	for {
		c.probe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
	}
}

func (c *Cache) probe(ctx context.Context) {
	err := c.refreshEpoch(ctx)
	if ctx.Err() != nil || err != nil {
		return
	}
	if c.forceEpoch.Load() && c.newEpoch(ctx) == nil {
		c.forceEpoch.Store(false)
	}
	if !c.br.allow() {
		if c.replay(ctx) {
			c.br.close()
		}
		return
	}
	if c.owes() {
		c.replay(ctx)
	}
}
