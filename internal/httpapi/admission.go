package httpapi

import (
	"math/rand/v2"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/admission"
	"github.com/parley-chat/parley/internal/promreg"
)

// Admission configures the overload protection of the API's /v1 routes
// (internal/admission): one adaptive concurrency limit for reads (GET) and
// one for writes (POST). The operational routes (/healthz, /readyz,
// /metrics, /admin/*, /dashboard, /openapi.json) are never shed.
type Admission struct {
	Read, Write admission.Config
}

// Admission classes: the label values of the admission metrics.
const (
	classRead  = "read"
	classWrite = "write"
)

// sheddableRoutes are admitted only below 90 % of their class's limit and
// never queue: clients poll them, and a missed poll costs nothing.
var sheddableRoutes = map[string]bool{"GET /v1/unread": true}

// limiters are the server's admission limiters (nil: admission is off).
type limiters struct {
	read, write *admission.Limiter
}

func newLimiters(cfg *Admission) *limiters {
	if cfg == nil {
		return nil
	}
	return &limiters{read: admission.New(cfg.Read), write: admission.New(cfg.Write)}
}

// admitted wraps a /v1 handler: the request is admitted by its class's
// limiter before anything else of it is done (auth and decoding included),
// or answered 503 overloaded at once. The permit is released in a defer
// with the answer's outcome: a success (< 400) is a latency sample, a 503
// (the pool's wait bound, the deadline) a drop; the rest say nothing.
func (s *Server) admitted(pattern string, h http.HandlerFunc) http.HandlerFunc {
	if s.limiters == nil {
		return h
	}
	lim, class := s.limiters.read, classRead
	if len(pattern) < 4 || pattern[:4] != "GET " {
		lim, class = s.limiters.write, classWrite
	}
	sheddable := sheddableRoutes[pattern]
	wait := s.metrics.queueWait.WithLabelValues(class)
	return func(w http.ResponseWriter, r *http.Request) {
		p, d := lim.Acquire(r.Context(), sheddable)
		if d.Queued {
			wait.Observe(d.Waited.Seconds())
		}
		if d.Reason != admission.Admitted {
			shed(w, r, d.Reason)
			return
		}
		defer func() { p.Release(outcome(w)) }()
		h(w, r)
	}
}

// outcome is what the answer written to w says about the capacity.
func outcome(w http.ResponseWriter) admission.Outcome {
	sw, ok := w.(*statusWriter)
	if !ok {
		return admission.Ignore
	}
	switch status := sw.status; {
	case status == 0:
		return admission.Ignore // nothing written: a panic on its way up
	case status < 400:
		return admission.Success
	case status == http.StatusServiceUnavailable:
		return admission.Drop
	default:
		return admission.Ignore
	}
}

// overloadedBody is the shed answer's body, encoded once (the JSON of
// writeError, newline included).
var overloadedBody = []byte(`{"error":{"code":"overloaded","message":"the server is overloaded and did not process the request; retry after the Retry-After delay"}}` + "\n")

// Pre-built header values of the shed answer: nothing is formatted or
// allocated per shed but the header map's entries.
var (
	shedContentType   = []string{"application/json; charset=utf-8"}
	shedContentLength = []string{strconv.Itoa(len(overloadedBody))}
	shedRetryAfter    = [][]string{{"1"}, {"2"}, {"3"}}
)

// codeOverloaded is the error code of a shed request (api.md).
const codeOverloaded = "overloaded"

// shed answers a request that admission control refused: 503 overloaded
// with a Retry-After of 1–3 s (spread, so that refused clients do not come
// back in step), the connection kept alive. Nothing is read, logged or
// looked up; ServeHTTP counts it in parley_http_shed_total and
// parley_http_requests_total, not in the latency histogram.
func shed(w http.ResponseWriter, r *http.Request, reason admission.Reason) {
	if st := stateFrom(r.Context()); st != nil {
		st.shed = reason
	}
	h := w.Header()
	h["Content-Type"] = shedContentType
	h["Content-Length"] = shedContentLength
	h["Retry-After"] = shedRetryAfter[rand.IntN(len(shedRetryAfter))]
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(overloadedBody)
}

// registerLimiterGauges exports each class's limit and in-flight requests.
func registerLimiterGauges(reg prometheus.Registerer, l *limiters) {
	if reg == nil || l == nil {
		return
	}
	limit := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "parley_admission_limit",
		Help: "The adaptive concurrency limit of admission control, by class (read: GET, write: POST)."}, []string{"class"})
	inflight := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "parley_admission_inflight",
		Help: "Requests admitted and not yet finished, by class."}, []string{"class"})
	promreg.MustRegister(reg, &limiterCollector{l: l, limit: limit, inflight: inflight})
}

// limiterCollector reads the limiters' published state at scrape time.
type limiterCollector struct {
	l               *limiters
	limit, inflight *prometheus.GaugeVec
}

func (c *limiterCollector) Describe(ch chan<- *prometheus.Desc) {
	c.limit.Describe(ch)
	c.inflight.Describe(ch)
}

func (c *limiterCollector) Collect(ch chan<- prometheus.Metric) {
	for class, lim := range map[string]*admission.Limiter{classRead: c.l.read, classWrite: c.l.write} {
		st := lim.Stats()
		c.limit.WithLabelValues(class).Set(float64(st.Limit))
		c.inflight.WithLabelValues(class).Set(float64(st.InFlight))
	}
	c.limit.Collect(ch)
	c.inflight.Collect(ch)
}

// shedObserve counts a shed request (ServeHTTP, instead of the latency
// histogram and the access log).
func (m *metrics) shedObserve(route string, reason admission.Reason, cohort string) {
	m.shedTotal.WithLabelValues(route, reason.String()).Inc()
	m.requests.WithLabelValues(route, "503", cohort).Inc()
}
