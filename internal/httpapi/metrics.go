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
	}
	if reg != nil {
		m.requests = promreg.MustRegister(reg, m.requests)
		m.duration = promreg.MustRegister(reg, m.duration)
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
