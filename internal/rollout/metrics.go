package rollout

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	percent *prometheus.GaugeVec
	cache   *prometheus.GaugeVec
	replica *prometheus.GaugeVec
	errors  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		percent: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "parley_rollout_percent",
			Help: "Share of users (0-100) on the optimized path of the endpoint, as applied by this instance.",
		}, []string{"endpoint"}),
		cache: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "parley_rollout_cache_enabled",
			Help: "1 when the optimized path of the endpoint uses the cache.",
		}, []string{"endpoint"}),
		replica: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "parley_rollout_replica_enabled",
			Help: "1 when the optimized path of the endpoint may read from replicas.",
		}, []string{"endpoint"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_rollout_poll_errors_total",
			Help: "Failed reads of the rollout table by the poller.",
		}),
	}
	if reg != nil {
		m.percent = register(reg, m.percent)
		m.cache = register(reg, m.cache)
		m.replica = register(reg, m.replica)
		m.errors = register(reg, m.errors)
	}
	return m
}

// register registers c, or returns the collector already registered under
// the same name (a second Store in the same process shares it).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}

func (m *metrics) observe(sn *snapshot) {
	for _, e := range sn.entries {
		m.percent.WithLabelValues(e.Endpoint).Set(float64(e.Percent))
		m.cache.WithLabelValues(e.Endpoint).Set(b2f(e.Cache))
		m.replica.WithLabelValues(e.Endpoint).Set(b2f(e.Replica))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
