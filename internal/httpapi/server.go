// Package httpapi is Parley's HTTP edge: routing, middleware (request ids,
// access log, metrics, auth, body limits), JSON encoding and the mapping of
// domain errors to the status codes and error codes of the API contract.
//
// It is also where the data-layer pieces meet per request (Config.Router,
// Cache, Rollouts):
//
//   - reads.go: the read endpoints (history, conversation list, one
//     conversation, unread) ask the endpoint's rollout for the user's path —
//     baseline (primary, no cache) or optimized (cache and/or replicas) — and
//     label the request's metrics with the cohort; the cache serves hits,
//     fills obey its no-stale-refill rule, the router picks the node with
//     read-your-writes at the user's token;
//   - consistency.go: X-Consistency / X-Consistency-Token, the stored
//     tokens and their Redis-outage fallback, and acknowledge, which every
//     write runs after its commit: capture the WAL position, raise the
//     writer's token, invalidate the cache (whatever the rollout says), set
//     X-Consistency-Token;
//   - cachevalue.go: a history page is cached once per conversation with
//     the member list in front, so a hit can refuse a non-member;
//   - authcache.go: bearer token → user, remembered per instance for a
//     minute, so that a cache hit costs the database nothing;
//   - admin.go: /admin/status and /admin/rollouts.
//
// Every read answer carries X-Read-Source (primary, replica or cache).
package httpapi

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parley-chat/parley/internal/cache"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/dbrouter"
	"github.com/parley-chat/parley/internal/monitor"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/rollout"
)

// Check is one readiness probe of a dependency.
type Check struct {
	Name string
	// Required components make /readyz return 503 when they fail; the others
	// only make the status "degraded".
	Required bool
	Probe    func(ctx context.Context) error
}

// Store is what the API needs from the data layer; *postgres.Store is it.
// Writes go to the primary; reads run on the Querier the Reader picks.
type Store interface {
	CreateUser(ctx context.Context, handle, displayName string) (chat.User, string, error)
	CreateConversation(ctx context.Context, creatorID int64, title string, memberIDs []int64) (chat.Conversation, error)
	SendMessage(ctx context.Context, req chat.SendRequest) (chat.SendResult, error)
	MarkRead(ctx context.Context, userID, convID, messageID int64) (int64, error)

	UserByToken(ctx context.Context, q postgres.Querier, token string) (chat.User, error)
	Conversation(ctx context.Context, q postgres.Querier, userID, convID int64) (chat.Conversation, error)
	Conversations(ctx context.Context, q postgres.Querier, userID int64, page chat.PageRequest) (chat.ConversationPage, error)
	Messages(ctx context.Context, q postgres.Querier, userID, convID int64, page chat.PageRequest) (chat.MessagePage, error)
	Unread(ctx context.Context, q postgres.Querier, userID int64) ([]chat.UnreadCount, error)
	MemberIDs(ctx context.Context, q postgres.Querier, convID int64) ([]int64, error)
}

// Reader runs a read on the database it chooses for endpoint (one of the
// chat.Endpoint* names) and says which served it ("primary", "replica"),
// for X-Read-Source. *postgres.Store's Read (always the primary) is the
// default; with a Config.Router the router reads (routerReader).
type Reader interface {
	Read(ctx context.Context, endpoint string, fn func(ctx context.Context, q postgres.Querier) error) (source string, err error)
}

// DefaultRequestTimeout bounds a request's work (its database calls above
// all): past it the request fails with 503 unavailable.
const DefaultRequestTimeout = 10 * time.Second

// Config wires the API to its dependencies.
type Config struct {
	Logger *slog.Logger
	// AccessLog receives one line per request (nil: Logger).
	AccessLog  *slog.Logger
	Gatherer   prometheus.Gatherer   // served on /metrics
	Registerer prometheus.Registerer // receives the HTTP metrics (nil: not exported)
	Checks     []Check               // /readyz

	// Store serves /v1; without it only the operational endpoints exist.
	Store Store
	// Reader picks where reads run when there is no Router (nil: Store.Read
	// when Store has one: the primary).
	Reader Reader
	// Router, when set, routes the reads (replicas per the rollout,
	// read-your-writes, X-Consistency: strong), gives every write its
	// position (X-Consistency-Token) and feeds /admin/status. Its primary
	// pool should be the Store's.
	Router *dbrouter.Router
	// Cache serves the cacheable reads when the endpoint's rollout enables
	// it, keeps the users' read-your-writes tokens, and is invalidated after
	// every write whatever the rollout says. Nil: no Redis (nothing is
	// cached; tokens are kept per instance).
	Cache *cache.Cache
	// Rollouts decides, per endpoint and user, between the baseline path
	// (primary, no cache) and the optimized one, and serves /admin/rollouts.
	// Nil: every request takes the baseline path and /admin/rollouts does
	// not exist.
	Rollouts *rollout.Store
	// Monitors, when set, is summarised in /admin/status "monitors".
	Monitors interface{ Summary() monitor.Summary }
	// TokenTTL is how long a user's read-your-writes token is kept after
	// their last write (default DefaultTokenTTL).
	TokenTTL time.Duration
	// AuthCacheTTL is how long this instance remembers a bearer token's user
	// (default DefaultAuthCacheTTL; negative: every request reads the
	// database).
	AuthCacheTTL time.Duration

	// Cursors signs pagination cursors; every instance must share its key
	// (postgres.CursorKey). Nil: a random key, fine for one instance only.
	Cursors *chat.CursorCodec
	// AdminToken authorizes the admin endpoints.
	AdminToken string
	// RequestTimeout bounds each request (default DefaultRequestTimeout).
	RequestTimeout time.Duration
}

// Server is the API's http.Handler.
type Server struct {
	cfg       Config
	mux       *http.ServeMux
	metrics   *metrics
	adminHash [32]byte
	hasAdmin  bool
	// reader runs reads without routing options (the Router's, else
	// Config.Reader); primary, for lookups that must not see a lagging
	// replica.
	reader  Reader
	primary Reader
	router  *dbrouter.Router
	cache   *cache.Cache
	auth    *authCache
}

// New builds the handler with every route.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.AccessLog == nil {
		cfg.AccessLog = cfg.Logger
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
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.AuthCacheTTL == 0 {
		cfg.AuthCacheTTL = DefaultAuthCacheTTL
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), metrics: newMetrics(cfg.Registerer),
		router: cfg.Router, cache: cfg.Cache, auth: newAuthCache(cfg.AuthCacheTTL, defaultAuthCacheSize)}
	if s.cache == nil {
		s.cache = cache.New(nil, cache.Config{Logger: cfg.Logger})
	}
	if r, ok := cfg.Store.(Reader); ok {
		s.primary = r
	}
	switch {
	case cfg.Router != nil:
		s.reader = routerReader{cfg.Router}
	case cfg.Reader != nil:
		s.reader = cfg.Reader
	default:
		s.reader = s.primary
	}
	if s.primary == nil {
		s.primary = s.reader
	}
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
	if s.cfg.Store == nil || s.reader == nil {
		return
	}
	s.mux.HandleFunc("POST /v1/users", s.admin(s.handleCreateUser))
	s.mux.HandleFunc("GET /v1/me", s.user(s.handleMe))
	s.mux.HandleFunc("POST /v1/conversations", s.user(s.handleCreateConversation))
	s.mux.HandleFunc("GET /v1/conversations", s.user(s.handleListConversations))
	s.mux.HandleFunc("GET /v1/conversations/{id}", s.user(s.handleGetConversation))
	s.mux.HandleFunc("POST /v1/conversations/{id}/messages", s.user(s.handleSendMessage))
	s.mux.HandleFunc("GET /v1/conversations/{id}/messages", s.user(s.handleListMessages))
	s.mux.HandleFunc("POST /v1/conversations/{id}/read", s.user(s.handleMarkRead))
	s.mux.HandleFunc("GET /v1/unread", s.user(s.handleUnread))

	s.mux.HandleFunc("GET /admin/status", s.admin(s.handleStatus))
	if s.cfg.Rollouts != nil {
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
