// Package httpapi is Parley's HTTP edge: routing, middleware (request ids,
// access log, metrics, timeouts, body limits, panic recovery), auth, the
// decoding of requests, the encoding of answers and the mapping of domain
// errors to the status codes and error codes of the API contract (api.md).
//
// A handler decodes its request, calls one method of chat.Service (or
// chat.Admin) and encodes what it returns: a read's body as the service
// made it (a cache hit is written as stored), a write's value with the
// chat.Encoder, and the headers the contract asks for — X-Read-Source from
// the read's source, X-Consistency-Token from the write's token, the cohort
// label of the metrics from the read's cohort. Nothing here knows where data
// comes from; internal/chatsvc decides that.
package httpapi

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parley-chat/parley/internal/chat"
)

// Check is one readiness probe of a dependency.
type Check struct {
	Name string
	// Required components make /readyz return 503 when they fail; the others
	// only make the status "degraded".
	Required bool
	// Probe is nil when the component answers; an error with code
	// chat.EUNAVAILABLE says it is unreachable.
	Probe func(ctx context.Context) error
}

// DefaultRequestTimeout bounds a request's work (its database calls above
// all): past it the request fails with 503 unavailable.
const DefaultRequestTimeout = 10 * time.Second

// Config wires the API to the service.
type Config struct {
	Logger *slog.Logger
	// AccessLog receives one line per request (nil: Logger). AccessLogSample
	// is the share of ordinary requests logged, 0–1 (default 1; a negative
	// value logs none); answers with status 500 or more are always logged.
	AccessLog       *slog.Logger
	AccessLogSample float64
	Gatherer        prometheus.Gatherer   // served on /metrics
	Registerer      prometheus.Registerer // receives the HTTP metrics (nil: not exported)
	Checks          []Check               // /readyz

	// Service serves /v1; without it only the operational endpoints exist.
	Service chat.Service
	// Admin serves /admin/status and /admin/rollouts (nil: they do not exist).
	Admin chat.Admin
	// Cursors signs the cursors in the answers of writes; it must be the
	// service's (nil: a random key, fine for tests of one instance).
	Cursors *chat.CursorCodec
	// AdminToken authorizes the admin endpoints.
	AdminToken string
	// RequestTimeout bounds each request (default DefaultRequestTimeout).
	RequestTimeout time.Duration
	// Admission, when set, protects the /v1 routes from overload with an
	// adaptive concurrency limit per class (admission.go); nil: off.
	Admission *Admission
	// Routes are more routes (ServeMux pattern → handler) served with the
	// same middleware — request id, timeout, body limit, recovery, access
	// log, metrics — each with its own auth: internal/app adds the API
	// description (GET /openapi.json) and the dashboard.
	Routes map[string]http.Handler
}

// Server is the API's http.Handler.
type Server struct {
	cfg       Config
	svc       chat.Service
	enc       chat.Encoder
	mux       *http.ServeMux
	metrics   *metrics
	limiters  *limiters // nil: admission control is off
	adminHash [32]byte
	hasAdmin  bool
}

// New builds the handler with every route.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.AccessLog == nil {
		cfg.AccessLog = cfg.Logger
	}
	if cfg.AccessLogSample == 0 {
		cfg.AccessLogSample = 1
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.DefaultGatherer
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.Cursors == nil {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		cfg.Cursors, _ = chat.NewCursorCodec(key)
	}
	s := &Server{cfg: cfg, svc: cfg.Service, enc: chat.Encoder{Cursors: cfg.Cursors}, mux: http.NewServeMux(), metrics: newMetrics(cfg.Registerer),
		limiters: newLimiters(cfg.Admission)}
	registerLimiterGauges(cfg.Registerer, s.limiters)
	if cfg.AdminToken != "" {
		s.adminHash, s.hasAdmin = tokenHash(cfg.AdminToken), true
	}
	s.routes()
	return s
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", s.handleHealthz)
	s.mux.HandleFunc("GET /readyz", s.handleReadyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{}))
	for pattern, h := range s.cfg.Routes {
		s.mux.Handle(pattern, h)
	}
	if s.svc == nil {
		return
	}
	api := map[string]http.HandlerFunc{
		"POST /v1/users":                       s.admin(s.handleCreateUser),
		"GET /v1/me":                           s.user(s.handleMe),
		"POST /v1/conversations":               s.user(s.handleCreateConversation),
		"GET /v1/conversations":                s.user(s.handleListConversations),
		"GET /v1/conversations/{id}":           s.user(s.handleGetConversation),
		"POST /v1/conversations/{id}/messages": s.user(s.handleSendMessage),
		"GET /v1/conversations/{id}/messages":  s.user(s.handleListMessages),
		"POST /v1/conversations/{id}/read":     s.user(s.handleMarkRead),
		"GET /v1/unread":                       s.user(s.handleUnread),
	}
	for pattern, h := range api {
		s.mux.HandleFunc(pattern, s.admitted(pattern, h))
		// The error series of every route and cohort exist from the start,
		// at zero (an error ratio must not wait for the first error).
		for _, cohort := range []string{chat.CohortBaseline, chat.CohortOptimized} {
			s.metrics.declare(pattern, cohort, http.StatusInternalServerError, http.StatusServiceUnavailable)
		}
	}
	if s.cfg.Admin != nil {
		s.mux.HandleFunc("GET /admin/status", s.admin(s.handleStatus))
		s.mux.HandleFunc("GET /admin/rollouts", s.admin(s.handleListRollouts))
		s.mux.HandleFunc("PUT /admin/rollouts/{endpoint}", s.admin(s.handleSetRollout))
	}
}

// NewHTTPServer returns an http.Server with the timeouts a public endpoint
// needs (slow headers, idle keep-alive connections) around h.
func NewHTTPServer(addr string, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
