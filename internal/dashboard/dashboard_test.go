package dashboard

import (
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

const adminToken = "adm_dashboard_test"

func TestQuantile(t *testing.T) {
	bounds := []float64{0.01, 0.1, 1}
	for _, tc := range []struct {
		name    string
		q       float64
		buckets []float64 // cumulative
		count   float64
		want    float64
		ok      bool
	}{
		{"empty", 0.5, []float64{0, 0, 0}, 0, 0, false},
		{"all in the first bucket", 0.5, []float64{10, 10, 10}, 10, 0.005, true},
		{"interpolated in the second", 0.95, []float64{50, 100, 100}, 100, 0.01 + 0.09*0.9, true},
		{"in +Inf: the highest bound", 0.95, []float64{0, 0, 50}, 100, 1, true},
		{"median at a bucket edge", 0.5, []float64{50, 100, 100}, 100, 0.01, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := quantile(tc.q, bounds, tc.buckets, tc.count)
			if ok != tc.ok || math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("quantile(%v) = %v, %v; want %v, %v", tc.q, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// fixture is a dashboard on a registry with the contract's families, a
// clock the test moves, and one replica whose probe the test sets.
type fixture struct {
	reg     *prometheus.Registry
	d       *Dashboard
	mu      sync.Mutex
	now     time.Time
	replica Replica

	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	cache       *prometheus.CounterVec
	lag         *prometheus.GaugeVec
	breaker     *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	monitor     *prometheus.GaugeVec
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{reg: prometheus.NewRegistry(), now: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC),
		replica: Replica{Name: "replica1", State: "healthy", Breaker: "closed"}}
	f.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: famHTTPRequests}, []string{"route", "code", "cohort"})
	f.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: famHTTPDuration,
		Buckets: []float64{.001, .01, .1, 1}}, []string{"route", "cohort"})
	f.cache = prometheus.NewCounterVec(prometheus.CounterOpts{Name: famCacheRequests}, []string{"endpoint", "result"})
	f.lag = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: famLagSeconds}, []string{"replica"})
	f.breaker = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: famBreakerState}, []string{"replica"})
	f.transitions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: famTransitions}, []string{"replica", "to"})
	f.monitor = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: famMonitorSuccess}, []string{"monitor"})
	f.reg.MustRegister(f.requests, f.duration, f.cache, f.lag, f.breaker, f.transitions, f.monitor)
	var err error
	f.d, err = New(Config{
		AdminToken: adminToken, Gatherer: f.reg, Now: f.clock,
		Replicas: func() []Replica { f.mu.Lock(); defer f.mu.Unlock(); return []Replica{f.replica} },
		Rollouts: func() []chat.Rollout {
			return []chat.Rollout{{Endpoint: chat.EndpointMessageHistory, Percent: 25, Cache: true}}
		},
		History: 10 * time.Second, Window: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) clock() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }

// tick moves the clock one second and takes a sample.
func (f *fixture) tick() {
	f.mu.Lock()
	f.now = f.now.Add(time.Second)
	f.mu.Unlock()
	f.d.Sample()
}

// TestState: rates, ratios and percentiles are over the window only; the
// lag history keeps History; a breaker transition shows at once, newest
// first, and stays in the list while it is in the history.
func TestState(t *testing.T) {
	f := newFixture(t)
	// Before the window: slow requests and errors that must not count.
	for range 100 {
		f.duration.WithLabelValues("GET /v1/unread", "baseline").Observe(0.5)
		f.requests.WithLabelValues("GET /v1/unread", "500", "baseline").Inc()
	}
	f.monitor.WithLabelValues("pgbouncer").Set(float64(f.now.Unix()))
	f.d.Sample()
	for i := range 12 { // 12 s: the window (5 s) has moved past the slow ones
		f.lag.WithLabelValues("replica1").Set(float64(i) / 10)
		f.tick()
	}
	for i := range 100 {
		f.duration.WithLabelValues("GET /v1/unread", "optimized").Observe(0.005)
		code := "200"
		if i < 2 {
			code = "503"
		}
		f.requests.WithLabelValues("GET /v1/unread", code, "optimized").Inc()
		result := "hit"
		if i%4 == 0 {
			result = "miss"
		}
		f.cache.WithLabelValues("unread_count", result).Inc()
		f.cache.WithLabelValues("unread_count", "bypass").Inc()
	}
	f.transitions.WithLabelValues("replica1", "open").Inc()
	f.breaker.WithLabelValues("replica1").Set(2)
	f.mu.Lock()
	f.replica = Replica{Name: "replica1", State: "paused", Breaker: "open", LagSeconds: 1.1, LagBytes: 4096, ProbedAt: f.now}
	f.mu.Unlock()

	st, err := f.d.State()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Latency) != 1 || st.Latency[0].Cohort != "optimized" || st.Latency[0].P95 == nil || *st.Latency[0].P95 > 0.01 {
		t.Fatalf("latency over the window: %+v", st.Latency)
	}
	if st.Errors.Ratio == nil || math.Abs(*st.Errors.Ratio-0.02) > 1e-9 || st.Errors.Cohorts["baseline"] != nil {
		t.Fatalf("errors over the window: %+v (ratio %v)", st.Errors, st.Errors.Ratio)
	}
	if st.Cache.HitRatio == nil || math.Abs(*st.Cache.HitRatio-0.75) > 1e-9 || st.Cache.State != "down" {
		t.Fatalf("cache: %+v", st.Cache)
	}
	r := st.Replicas[0]
	if r.Breaker != "open" || r.State != "paused" || r.LagBytes != 4096 {
		t.Fatalf("replica now: %+v", r)
	}
	if len(r.LagHistory) != 11 || *r.LagHistory[len(r.LagHistory)-1].LagSeconds != 1.1 {
		t.Fatalf("lag history: %d samples, last %+v", len(r.LagHistory), r.LagHistory[len(r.LagHistory)-1])
	}
	if len(r.Transitions) != 1 || r.Transitions[0].To != "open" || r.TransitionsTotal["open"] != 1 {
		t.Fatalf("transitions before the next sample: %+v %v", r.Transitions, r.TransitionsTotal)
	}
	f.tick()
	f.transitions.WithLabelValues("replica1", "half_open").Inc()
	f.tick()
	st, _ = f.d.State()
	if tr := st.Replicas[0].Transitions; len(tr) != 2 || tr[0].To != "half_open" || tr[1].To != "open" || !tr[0].At.After(tr[1].At) {
		t.Fatalf("transitions, newest first: %+v", tr)
	}
	if len(st.Monitors) != 1 || st.Monitors[0].AgeSeconds == nil || *st.Monitors[0].AgeSeconds != 14 {
		t.Fatalf("monitors: %+v", st.Monitors)
	}
	if len(st.Rollouts) != 1 || st.Rollouts[0].Percent != 25 || st.Canary != nil {
		t.Fatalf("rollouts %+v, canary %v", st.Rollouts, st.Canary)
	}
}

// signedIn is a server with the dashboard behind httpapi's middleware (as
// app wires it) and a client that checks every exchange against
// api/openapi.yaml.
func signedIn(t *testing.T) (*fixture, *stacktest.Client) {
	f := newFixture(t)
	srv := httptest.NewServer(httpapi.New(httpapi.Config{Routes: f.d.Routes(), Gatherer: f.reg, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	return f, stacktest.NewClient(t, srv.URL, adminToken)
}

func sessionCookie(t *testing.T, r stacktest.Reply) string {
	t.Helper()
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Name == CookieName {
			return c.Name + "=" + c.Value
		}
	}
	return ""
}

// TestSignIn: ?token= and the form both answer a 303 to the clean URL, with
// an HttpOnly, SameSite=Strict session cookie for the admin token only; the
// session opens the page and its data, expires, and cannot be forged; the
// data also takes the admin token as a bearer token.
func TestSignIn(t *testing.T) {
	f, c := signedIn(t)
	form := []string{"Content-Type", "application/x-www-form-urlencoded"}

	r := c.Must(200, c.Do("GET", "/dashboard", "", nil))
	if !strings.Contains(string(r.Body), `action="/dashboard/login"`) || strings.Contains(string(r.Body), "/dashboard/data") {
		t.Fatalf("no session: not the login form:\n%s", r.Body)
	}
	stacktest.Want(t, c.Do("GET", "/dashboard/data", "", nil), 401, chat.EUNAUTHENTICATED)

	for _, tc := range []struct {
		name, method, path string
		body               any
		header             []string
		ok                 bool
	}{
		{"query, wrong token", "GET", "/dashboard?token=nope", nil, nil, false},
		{"form, wrong token", "POST", "/dashboard/login", "token=nope", form, false},
		{"query", "GET", "/dashboard?token=" + url.QueryEscape(adminToken), nil, nil, true},
		{"form", "POST", "/dashboard/login", "token=" + url.QueryEscape(adminToken), form, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.Must(303, c.Do(tc.method, tc.path, "", tc.body, tc.header...))
			loc, cookie := r.Header.Get("Location"), sessionCookie(t, r)
			if strings.Contains(loc, adminToken) || strings.Contains(r.Header.Get("Set-Cookie"), adminToken) {
				t.Fatalf("the token is in the redirect: %s", r.Header)
			}
			if !tc.ok {
				if loc != "/dashboard?login=failed" || cookie != "" {
					t.Fatalf("a wrong token: Location %q, cookie %q", loc, cookie)
				}
				return
			}
			set := r.Header.Get("Set-Cookie")
			if loc != "/dashboard" || cookie == "" || !strings.Contains(set, "HttpOnly") || !strings.Contains(set, "SameSite=Strict") ||
				!strings.Contains(set, "Path=/dashboard") {
				t.Fatalf("signed in: Location %q, Set-Cookie %q", loc, set)
			}
			page := c.Must(200, c.Do("GET", "/dashboard", "", nil, "Cookie", cookie))
			csp := page.Header.Get("Content-Security-Policy")
			if !strings.Contains(string(page.Body), "/dashboard/data") || !strings.Contains(csp, "script-src 'sha256-") ||
				!strings.Contains(csp, "connect-src 'self'") {
				t.Fatalf("the page (CSP %q):\n%.300s", csp, page.Body)
			}
			// Nothing loaded from elsewhere (the SVG namespace is a name, not a fetch).
			for _, external := range []string{"src=", `href="http`, "url(", "@import", "fetch('http"} {
				if strings.Contains(string(page.Body), external) {
					t.Errorf("the page fetches from elsewhere (%q)", external)
				}
			}
			if n := strings.Count(string(page.Body), "fetch("); n != 1 {
				t.Errorf("%d fetch calls, want the one of /dashboard/data", n)
			}
			c.Must(200, c.Do("GET", "/dashboard/data", "", nil, "Cookie", cookie))
		})
	}
	c.Must(200, c.Do("GET", "/dashboard/data", adminToken, nil))
	stacktest.Want(t, c.Do("GET", "/dashboard/data", "plt_user", nil), 401, chat.EUNAUTHENTICATED)

	login := c.Must(303, c.Do("POST", "/dashboard/login", "", "token="+adminToken, form...))
	cookie := sessionCookie(t, login)
	forged := cookie[:len(cookie)-2] + "xx"
	stacktest.Want(t, c.Do("GET", "/dashboard/data", "", nil, "Cookie", forged), 401, chat.EUNAUTHENTICATED)
	other, _ := New(Config{AdminToken: "another token", Gatherer: f.reg})
	if other.session(&http.Request{Header: http.Header{"Cookie": {cookie}}}) {
		t.Error("a session of one admin token opens a dashboard with another")
	}
	f.mu.Lock()
	f.now = f.now.Add(DefaultSessionTTL + time.Minute)
	f.mu.Unlock()
	stacktest.Want(t, c.Do("GET", "/dashboard/data", "", nil, "Cookie", cookie), 401, chat.EUNAUTHENTICATED)

	out := c.Must(303, c.Do("POST", "/dashboard/logout", "", nil))
	if set := out.Header.Get("Set-Cookie"); !strings.Contains(set, "Max-Age=0") {
		t.Fatalf("sign out: Set-Cookie %q", set)
	}
}
