// Package httpapi is Parley's HTTP edge: routing, middleware (request ids,
// access log, metrics, auth, body limits), JSON encoding and the mapping of
// domain errors to the status codes and error codes of the API contract.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness probe of a dependency.
type Check struct {
	Name string
	// Required components make /readyz return 503 when they fail; the others
	// only make the status "degraded".
	Required bool
	Probe    func(ctx context.Context) error
}

// Config wires the API to its dependencies.
type Config struct {
	Logger   *slog.Logger
	Gatherer prometheus.Gatherer // served on /metrics
	Checks   []Check             // /readyz
}

// Server is the API's http.Handler.
type Server struct {
	cfg Config
	mux *http.ServeMux
}

// New builds the handler with every route.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.DefaultGatherer
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.routes()
	return s
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", s.handleHealthz)
	s.mux.HandleFunc("GET /readyz", s.handleReadyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{}))
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
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
