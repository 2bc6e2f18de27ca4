package dbrouter

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the router's Prometheus metrics (names in the shared metrics
// contract). Gauges are read from the pools and the replicas' views at scrape
// time by the collector below; counters and the histogram are updated inline.
type metrics struct {
	reads         *prometheus.CounterVec   // parley_db_reads_total{endpoint,target,reason}
	acquire       *prometheus.HistogramVec // parley_db_pool_acquire_duration_seconds{pool}
	transitions   *prometheus.CounterVec   // parley_replica_breaker_transitions_total{replica,to}
	spillRejected *prometheus.CounterVec   // parley_db_spillover_rejected_total{endpoint}
	checks        *prometheus.CounterVec   // parley_db_replica_position_checks_total{endpoint,outcome}
}

func newMetrics() *metrics {
	return &metrics{
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_db_reads_total",
			Help: "Reads by endpoint, the target that served them (primary, replica, cache) and why.",
		}, []string{"endpoint", "target", "reason"}),
		acquire: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "parley_db_pool_acquire_duration_seconds",
			Help:    "Time to acquire a connection from a pool, including failed and timed-out acquires.",
			Buckets: []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
		}, []string{"pool"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_replica_breaker_transitions_total",
			Help: "Replica circuit breaker transitions by the state entered (closed, half_open, open).",
		}, []string{"replica", "to"}),
		spillRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_db_spillover_rejected_total",
			Help: "Reads meant for a replica that found no healthy replica and no free spill-over slot on the primary (failed with postgres.ErrUnavailable).",
		}, []string{"endpoint"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_db_replica_position_checks_total",
			Help: "Reads held to a token the replica had not replayed at its last probe, checked on the replica in the read's own round trip, by outcome: caught_up (served at once), waited (served after waiting up to ReplicaWait), behind (served by the primary, reason token_ahead).",
		}, []string{"endpoint", "outcome"}),
	}
}

func (m *metrics) read(endpoint, target, reason string) {
	m.reads.WithLabelValues(endpoint, target, reason).Inc()
}

func (m *metrics) register(reg prometheus.Registerer, r *Router) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.reads, m.acquire, m.transitions, m.spillRejected, m.checks, &collector{r: r}} {
		errs = append(errs, reg.Register(c))
	}
	return errors.Join(errs...)
}

var (
	descPoolConns = prometheus.NewDesc("parley_db_pool_connections",
		"Connections of a pool by state (idle, in_use, max).", []string{"pool", "state"}, nil)
	descPoolSaturation = prometheus.NewDesc("parley_db_pool_saturation_ratio",
		"Connections in use over the pool's maximum (0-1).", []string{"pool"}, nil)
	descLagBytes = prometheus.NewDesc("parley_replica_lag_bytes",
		"WAL bytes the replica's replay trails the primary's insert position, at the last probe.", []string{"replica"}, nil)
	descLagSeconds = prometheus.NewDesc("parley_replica_lag_seconds",
		"Seconds since the primary first had WAL the replica has not replayed (0 when caught up), at the last probe.", []string{"replica"}, nil)
	descReplicaReads = prometheus.NewDesc("parley_replica_reads_total",
		"Reads each replica served (with several replicas: how the router spreads them; parley_db_reads_total{target=\"replica\"} is their sum).", []string{"replica"}, nil)
	descBreakerState = prometheus.NewDesc("parley_replica_breaker_state",
		"Replica circuit breaker state: 0 closed, 1 half-open, 2 open.", []string{"replica"}, nil)
	descSpillInFlight = prometheus.NewDesc("parley_db_spillover_in_flight",
		"Reads meant for a replica running on the primary now because no replica is healthy.", nil, nil)
	descSpillLimit = prometheus.NewDesc("parley_db_spillover_limit",
		"Bound on concurrent spill-over reads on the primary (MaxSpillover; absent when unbounded).", nil, nil)
)

// collector exports the pools' and replicas' state at scrape time.
type collector struct{ r *Router }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPoolConns, descPoolSaturation, descLagBytes, descLagSeconds,
		descReplicaReads, descBreakerState, descSpillInFlight, descSpillLimit} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := c.r
	for _, p := range r.PoolStats() {
		ch <- prometheus.MustNewConstMetric(descPoolConns, prometheus.GaugeValue, float64(p.Idle), p.Name, "idle")
		ch <- prometheus.MustNewConstMetric(descPoolConns, prometheus.GaugeValue, float64(p.InUse), p.Name, "in_use")
		ch <- prometheus.MustNewConstMetric(descPoolConns, prometheus.GaugeValue, float64(p.Max), p.Name, "max")
		ch <- prometheus.MustNewConstMetric(descPoolSaturation, prometheus.GaugeValue, p.Saturation, p.Name)
	}
	for _, rep := range r.replicas {
		v := rep.view.Load()
		if v == nil {
			v = &replicaView{breaker: BreakerOpen}
		}
		ch <- prometheus.MustNewConstMetric(descLagBytes, prometheus.GaugeValue, float64(v.lagBytes), rep.name)
		ch <- prometheus.MustNewConstMetric(descLagSeconds, prometheus.GaugeValue, v.lagSeconds, rep.name)
		ch <- prometheus.MustNewConstMetric(descBreakerState, prometheus.GaugeValue, float64(v.breaker), rep.name)
		ch <- prometheus.MustNewConstMetric(descReplicaReads, prometheus.CounterValue, float64(rep.served.Load()), rep.name)
	}
	ch <- prometheus.MustNewConstMetric(descSpillInFlight, prometheus.GaugeValue, float64(r.spillInFlight.Load()))
	if r.spill != nil {
		ch <- prometheus.MustNewConstMetric(descSpillLimit, prometheus.GaugeValue, float64(cap(r.spill)))
	}
}
