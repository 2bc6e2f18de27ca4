package rollout

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/promreg"
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
		m.percent = promreg.MustRegister(reg, m.percent)
		m.cache = promreg.MustRegister(reg, m.cache)
		m.replica = promreg.MustRegister(reg, m.replica)
		m.errors = promreg.MustRegister(reg, m.errors)
	}
	return m
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
