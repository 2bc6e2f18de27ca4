package canary

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/promreg"
)

// metrics are the controller's own (metrics.md, "canary controller").
type metrics struct {
	stage     *prometheus.GaugeVec   // parley_canary_stage_percent{endpoint}
	checks    *prometheus.CounterVec // parley_canary_checks_total{endpoint,verdict}
	rollbacks *prometheus.CounterVec // parley_canary_rollbacks_total{endpoint,trigger}
}

// rollbackTriggers are the trigger label's values.
var rollbackTriggers = []string{TriggerErrors, TriggerLatency, TriggerMannWhitney, TriggerQueueWait,
	TriggerSaturation, TriggerBreaker, TriggerAbort, TriggerJudgeError}

func newMetrics(reg prometheus.Registerer, endpoint string) *metrics {
	m := &metrics{
		stage: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "parley_canary_stage_percent",
			Help: "The percent of users the canary controller has put on the endpoint's optimized path (0 after a rollback).",
		}, []string{"endpoint"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_canary_checks_total",
			Help: "Canary checks by verdict (pass, fail, inconclusive, error).",
		}, []string{"endpoint", "verdict"}),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_canary_rollbacks_total",
			Help: "Canary rollbacks by the trigger that caused them.",
		}, []string{"endpoint", "trigger"}),
	}
	if reg != nil {
		m.stage = promreg.MustRegister(reg, m.stage)
		m.checks = promreg.MustRegister(reg, m.checks)
		m.rollbacks = promreg.MustRegister(reg, m.rollbacks)
	}
	// Every series from the start, at zero (counters are read with increase()).
	m.stage.WithLabelValues(endpoint)
	for _, v := range []Verdict{Pass, Fail, Inconclusive, Error} {
		m.checks.WithLabelValues(endpoint, string(v))
	}
	for _, t := range rollbackTriggers {
		m.rollbacks.WithLabelValues(endpoint, t)
	}
	return m
}
