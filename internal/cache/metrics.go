package cache

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/promreg"
)

// Result says how GetOrFill served a request.
type Result uint8

const (
	// ResultBypass: the cache was skipped (breaker open, or this instance has
	// an invalidation of the owner waiting for Redis); the fill served it.
	ResultBypass Result = iota
	// ResultHit: served from the cache (or from another request's fill of
	// the same generation); the fill function was not called.
	ResultHit
	// ResultMiss: not cached; the fill served it and its value was stored if
	// cacheable.
	ResultMiss
	// ResultError: Redis failed or timed out; the fill served it.
	ResultError
	numResults
)

// String is the metric label value: bypass, hit, miss or error.
func (r Result) String() string {
	switch r {
	case ResultHit:
		return "hit"
	case ResultMiss:
		return "miss"
	case ResultError:
		return "error"
	}
	return "bypass"
}

type metrics struct {
	requests      *prometheus.CounterVec
	invalidations *prometheus.CounterVec
	errors        *prometheus.CounterVec
	up            prometheus.Gauge
	pending       prometheus.Gauge
	pendingTokens prometheus.Gauge
	epochChanges  prometheus.Counter
	deliveryWaits *prometheus.CounterVec

	byEndpoint sync.Map // endpoint → *[numResults]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_cache_requests_total",
			Help: "Cache lookups by endpoint and result (hit, miss, error, bypass).",
		}, []string{"endpoint", "result"}),
		invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_cache_invalidations_total",
			Help: "Generation bumps requested after writes, by kind (conversation, user).",
		}, []string{"kind"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_cache_errors_total",
			Help: "Redis operations of the cache that failed or timed out, by operation.",
		}, []string{"op"}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "parley_cache_up",
			Help: "1 while the cache's Redis breaker is closed (Redis in use), 0 while it is open.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "parley_cache_pending_invalidations",
			Help: "Generation bumps waiting for Redis on this instance.",
		}),
		pendingTokens: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "parley_cache_pending_tokens",
			Help: "Read-your-writes tokens waiting for Redis on this instance.",
		}),
		epochChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_cache_epoch_changes_total",
			Help: "Times this instance found a new cache epoch (the previous one lapsed during an outage, or Redis lost it): everything cached before is ignored.",
		}),
		deliveryWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_cache_delivery_waits_total",
			Help: "Writes whose acknowledgement waited for a token or invalidation Redis had not received, by outcome (delivered, lapsed: Redis unreachable until the epoch lapsed, timeout).",
		}, []string{"outcome"}),
	}
	if reg != nil {
		m.requests = promreg.MustRegister(reg, m.requests)
		m.invalidations = promreg.MustRegister(reg, m.invalidations)
		m.errors = promreg.MustRegister(reg, m.errors)
		m.up = promreg.MustRegister(reg, m.up)
		m.pending = promreg.MustRegister(reg, m.pending)
		m.pendingTokens = promreg.MustRegister(reg, m.pendingTokens)
		m.epochChanges = promreg.MustRegister(reg, m.epochChanges)
		m.deliveryWaits = promreg.MustRegister(reg, m.deliveryWaits)
	}
	for _, kind := range []string{"conversation", "user"} {
		m.invalidations.WithLabelValues(kind)
	}
	for _, outcome := range []string{"delivered", "lapsed", "timeout"} {
		m.deliveryWaits.WithLabelValues(outcome)
	}
	return m
}

// counters returns the endpoint's request counters, resolved once.
func (m *metrics) counters(endpoint string) *[numResults]prometheus.Counter {
	if v, ok := m.byEndpoint.Load(endpoint); ok {
		return v.(*[numResults]prometheus.Counter)
	}
	var cs [numResults]prometheus.Counter
	for r := range numResults {
		cs[r] = m.requests.WithLabelValues(endpoint, r.String())
	}
	v, _ := m.byEndpoint.LoadOrStore(endpoint, &cs)
	return v.(*[numResults]prometheus.Counter)
}
