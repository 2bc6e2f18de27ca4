package httpapi

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/promreg"
)

// metrics are the API's HTTP metrics (metrics.md): route is the ServeMux
// pattern ("unmatched" for none), so label values stay bounded.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// admission control (admission.go)
	shedTotal *prometheus.CounterVec
	queueWait *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_http_requests_total",
			Help: "HTTP requests answered, by route pattern, status code and rollout cohort.",
		}, []string{"route", "code", "cohort"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "parley_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route pattern and rollout cohort.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "cohort"}),
		shedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_http_shed_total",
			Help: "Requests answered 503 overloaded by admission control, by route pattern and reason (limit: the limit reached and no queueing; queue: the wait bound passed in the queue; deadline: too little time left).",
		}, []string{"route", "reason"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "parley_admission_queue_wait_seconds",
			Help:    "Time the requests that found the concurrency limit reached waited in the admission queue (admitted or shed), by class.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1},
		}, []string{"class"}),
	}
	if reg != nil {
		m.requests = promreg.MustRegister(reg, m.requests)
		m.duration = promreg.MustRegister(reg, m.duration)
		m.shedTotal = promreg.MustRegister(reg, m.shedTotal)
		m.queueWait = promreg.MustRegister(reg, m.queueWait)
	}
	return m
}

// declare creates the series of route and cohort at zero: the duration
// histogram and the request counters of codes.
func (m *metrics) declare(route, cohort string, codes ...int) {
	m.duration.WithLabelValues(route, cohort)
	for _, c := range codes {
		m.requests.WithLabelValues(route, strconv.Itoa(c), cohort)
	}
}

func (m *metrics) observe(route string, status int, cohort string, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(status), cohort).Inc()
	m.duration.WithLabelValues(route, cohort).Observe(d.Seconds())
}
