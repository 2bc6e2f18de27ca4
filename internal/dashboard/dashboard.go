// Package dashboard is the live operations page of `parley serve`, for the
// people running a rollout: GET /dashboard, one self-contained HTML page
// (its CSS and script inline, allowed by hash in its Content-Security-Policy;
// nothing fetched from anywhere else) that polls GET /dashboard/data every
// second and shows this instance's view:
//
//   - each endpoint's rollout (percent, cache, replica); a canary section
//     left empty until `parley canary` reports here;
//   - per replica: state, breaker, lag now and over the last minutes (a
//     chart), and the breaker's transitions;
//   - the cache's state and hit ratio; p50/p95 by route and cohort; the
//     error ratio; pool and PgBouncer saturation and queue wait; each
//     monitor's last success.
//
// The numbers come from the metrics contract (metrics.md) read from the
// server's own registry: a sampler gathers it every Interval and keeps a
// ring of History (lag and breaker per replica) and a window of Window
// (counters and histograms, for rates, ratios and percentiles); the
// replicas' state comes from the router's latest probes.
//
// Access is the admin token's. A person signs in with a form (POST
// /dashboard/login) or ?token= on the page's URL, answered at once by a 303
// to the clean /dashboard, so the token does not stay in a URL a browser or
// proxy keeps (Parley's access log records paths only). Both set a session
// cookie (HttpOnly, SameSite=Strict, path /dashboard, 12 h) signed with a
// key derived from the admin token, good for the dashboard only — never the
// admin API. /dashboard/data also accepts the admin token as a bearer token.
package dashboard

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/chat"
)

// Defaults of Config.
const (
	DefaultInterval   = time.Second
	DefaultHistory    = 5 * time.Minute
	DefaultWindow     = time.Minute
	DefaultSessionTTL = 12 * time.Hour
)

// CookieName is the session cookie's name.
const CookieName = "parley_dashboard"

// Replica is a replica as the router last probed it.
type Replica struct {
	Name       string
	State      string // healthy|lagging|paused|down
	Breaker    string // closed|half_open|open
	LagSeconds float64
	LagBytes   int64
	ProbedAt   time.Time
}

// Config wires the dashboard to a server.
type Config struct {
	// AdminToken signs people in (required).
	AdminToken string
	// Gatherer is the server's registry, read every Interval (required).
	Gatherer prometheus.Gatherer
	// Replicas returns the router's latest probe of each replica.
	Replicas func() []Replica
	// Rollouts returns the rollouts this instance applies.
	Rollouts func() []chat.Rollout
	Logger   *slog.Logger
	// Interval between samples, History of the lag chart, Window of rates
	// and percentiles, SessionTTL of a sign-in (defaults above).
	Interval, History, Window, SessionTTL time.Duration
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Dashboard samples the metrics and serves the page and its data.
type Dashboard struct {
	cfg        Config
	log        *slog.Logger
	sessionKey []byte
	tokenHash  [32]byte
	pages      pages

	mu      sync.Mutex
	history []sample    // oldest first, at most History/Interval+1
	window  []*snapshot // oldest first, at most Window/Interval+1
}

// sample is what the lag chart and the transition list keep per Interval.
type sample struct {
	at          time.Time
	lag         map[string]float64 // replica → seconds
	breaker     map[string]string  // replica → closed|half_open|open
	transitions map[string]float64 // replica + "\x00" + to → count
}

// New builds the dashboard; Run samples, Routes serves.
func New(cfg Config) (*Dashboard, error) {
	if cfg.AdminToken == "" || cfg.Gatherer == nil {
		return nil, errors.New("dashboard: AdminToken and Gatherer are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.Interval, DefaultInterval}, {&cfg.History, DefaultHistory}, {&cfg.Window, DefaultWindow}, {&cfg.SessionTTL, DefaultSessionTTL}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Replicas == nil {
		cfg.Replicas = func() []Replica { return nil }
	}
	if cfg.Rollouts == nil {
		cfg.Rollouts = func() []chat.Rollout { return nil }
	}
	p, err := newPages()
	if err != nil {
		return nil, err
	}
	key := sha256.Sum256([]byte("parley dashboard session\x00" + cfg.AdminToken))
	return &Dashboard{cfg: cfg, log: cfg.Logger, sessionKey: key[:], tokenHash: sha256.Sum256([]byte(cfg.AdminToken)), pages: p}, nil
}

// Run samples the registry every Interval until ctx ends.
func (d *Dashboard) Run(ctx context.Context) {
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	d.Sample()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.Sample()
		}
	}
}

// Sample takes one sample now (Run calls it every Interval).
func (d *Dashboard) Sample() {
	snap, err := d.gather()
	if err != nil {
		d.log.Warn("dashboard: gather metrics", "err", err)
		return
	}
	s := sample{at: snap.at, lag: map[string]float64{}, breaker: map[string]string{}, transitions: map[string]float64{}}
	for _, p := range snap.find(famLagSeconds, nil) {
		s.lag[p.labels["replica"]] = p.value
	}
	for _, p := range snap.find(famBreakerState, nil) {
		s.breaker[p.labels["replica"]] = breakerName(p.value)
	}
	for _, p := range snap.find(famTransitions, nil) {
		s.transitions[p.labels["replica"]+"\x00"+p.labels["to"]] = p.value
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.history = keep(append(d.history, s), int(d.cfg.History/d.cfg.Interval)+1)
	d.window = keep(append(d.window, snap), int(d.cfg.Window/d.cfg.Interval)+1)
}

func keep[T any](s []T, n int) []T {
	if len(s) > n {
		return append(s[:0:0], s[len(s)-n:]...)
	}
	return s
}

func (d *Dashboard) gather() (*snapshot, error) {
	mfs, err := d.cfg.Gatherer.Gather()
	if err != nil && len(mfs) == 0 {
		return nil, err
	}
	return snapshotOf(d.cfg.Now(), mfs), nil
}

func breakerName(v float64) string {
	switch v {
	case 0:
		return "closed"
	case 1:
		return "half_open"
	}
	return "open"
}

// State is what the page shows now.
func (d *Dashboard) State() (State, error) {
	now, err := d.gather()
	if err != nil {
		return State{}, err
	}
	d.mu.Lock()
	history := d.history
	var then *snapshot
	if len(d.window) > 0 {
		then = d.window[0]
	}
	d.mu.Unlock()

	st := State{
		GeneratedAt:  now.at.UTC(),
		IntervalSecs: d.cfg.Interval.Seconds(),
		WindowSecs:   d.cfg.Window.Seconds(),
		HistorySecs:  d.cfg.History.Seconds(),
		Rollouts:     d.cfg.Rollouts(),
		Replicas:     []ReplicaState{},
	}
	if st.Rollouts == nil {
		st.Rollouts = []chat.Rollout{}
	}
	window(&st, now, then)

	for _, r := range d.cfg.Replicas() {
		rs := ReplicaState{Name: r.Name, State: r.State, Breaker: r.Breaker, LagSeconds: nonNeg(r.LagSeconds),
			LagBytes: max(r.LagBytes, 0), LagHistory: []LagSample{}, Transitions: []Transition{}, TransitionsTotal: map[string]float64{}}
		if !r.ProbedAt.IsZero() {
			t := r.ProbedAt.UTC()
			rs.ProbedAt = &t
		}
		for _, s := range history {
			ls := LagSample{At: float64(s.at.UnixMilli()) / 1000, Breaker: s.breaker[r.Name]}
			if v, ok := s.lag[r.Name]; ok {
				ls.LagSeconds = finite(nonNeg(v))
			}
			rs.LagHistory = append(rs.LagHistory, ls)
		}
		// Transitions: a counter that grew between two samples (the last
		// sample and now included, so a change shows at once).
		nowCounts := map[string]float64{}
		for _, p := range now.find(famTransitions, map[string]string{"replica": r.Name}) {
			nowCounts[r.Name+"\x00"+p.labels["to"]] = p.value
			rs.TransitionsTotal[p.labels["to"]] = nonNeg(p.value)
		}
		steps := append(append([]sample(nil), history...), sample{at: now.at, transitions: nowCounts})
		for i := len(steps) - 1; i > 0 && len(rs.Transitions) < 20; i-- {
			for _, to := range []string{"open", "half_open", "closed"} {
				k := r.Name + "\x00" + to
				if steps[i].transitions[k] > steps[i-1].transitions[k] {
					rs.Transitions = append(rs.Transitions, Transition{At: steps[i].at.UTC(), To: to})
				}
			}
		}
		st.Replicas = append(st.Replicas, rs)
	}
	return st, nil
}

// Routes are the dashboard's routes (ServeMux patterns), for
// httpapi.Config.Routes.
func (d *Dashboard) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"GET /dashboard":         http.HandlerFunc(d.handlePage),
		"POST /dashboard/login":  http.HandlerFunc(d.handleLogin),
		"POST /dashboard/logout": http.HandlerFunc(d.handleLogout),
		"GET /dashboard/data":    http.HandlerFunc(d.handleData),
	}
}

// GET /dashboard: the page with a session, else the login form; with
// ?token=, a 303 to the clean URL at once.
func (d *Dashboard) handlePage(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Has("token") {
		d.signIn(w, r, r.URL.Query().Get("token"))
		return
	}
	if d.session(r) {
		d.pages.write(w, d.pages.dashboard)
		return
	}
	if r.URL.Query().Get("login") == "failed" {
		d.pages.write(w, d.pages.loginFailed)
		return
	}
	d.pages.write(w, d.pages.login)
}

// POST /dashboard/login (form: token).
func (d *Dashboard) handleLogin(w http.ResponseWriter, r *http.Request) {
	d.signIn(w, r, r.PostFormValue("token"))
}

func (d *Dashboard) signIn(w http.ResponseWriter, r *http.Request, token string) {
	to := "/dashboard?login=failed"
	if d.isAdmin(token) {
		http.SetCookie(w, d.cookie(r, d.newSession(), int(d.cfg.SessionTTL.Seconds())))
		to = "/dashboard"
	}
	redirect(w, to)
}

// POST /dashboard/logout.
func (d *Dashboard) handleLogout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, d.cookie(r, "", -1))
	redirect(w, "/dashboard")
}

// GET /dashboard/data: State as JSON, for a session or the admin token.
func (d *Dashboard) handleData(w http.ResponseWriter, r *http.Request) {
	if !d.session(r) && !d.isAdmin(bearer(r)) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="parley"`)
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": map[string]string{
			"code": chat.EUNAUTHENTICATED, "message": "sign in at /dashboard, or send Authorization: Bearer <admin token>"}})
		return
	}
	st, err := d.State()
	if err != nil {
		d.log.Error("dashboard: state", "err", err, "request_id", chat.RequestID(r.Context()))
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": map[string]string{
			"code": chat.EINTERNAL, "message": "internal error (request id " + chat.RequestID(r.Context()) + ")"}})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, st)
}

func redirect(w http.ResponseWriter, to string) {
	h := w.Header()
	h.Set("Location", to)
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(http.StatusSeeOther)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func bearer(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// isAdmin compares token with the admin token in constant time.
func (d *Dashboard) isAdmin(token string) bool {
	if token == "" {
		return false
	}
	h := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(h[:], d.tokenHash[:]) == 1
}

// A session is "v1.<unix issued>.<HMAC-SHA256 of v1.<issued>>".
func (d *Dashboard) newSession() string {
	msg := "v1." + strconv.FormatInt(d.cfg.Now().Unix(), 10)
	return msg + "." + d.mac(msg)
}

func (d *Dashboard) mac(msg string) string {
	m := hmac.New(sha256.New, d.sessionKey)
	m.Write([]byte(msg))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// session reports whether r carries a valid, unexpired session cookie.
func (d *Dashboard) session(r *http.Request) bool {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(c.Value, '.')
	if i < 0 || !strings.HasPrefix(c.Value, "v1.") {
		return false
	}
	msg, sig := c.Value[:i], c.Value[i+1:]
	if !hmac.Equal([]byte(sig), []byte(d.mac(msg))) {
		return false
	}
	issued, err := strconv.ParseInt(strings.TrimPrefix(msg, "v1."), 10, 64)
	if err != nil {
		return false
	}
	age := d.cfg.Now().Sub(time.Unix(issued, 0))
	return age >= -time.Minute && age < d.cfg.SessionTTL
}

func (d *Dashboard) cookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: CookieName, Value: value, Path: "/dashboard", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https"),
	}
}
