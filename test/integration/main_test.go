// Package integration drives the whole service over HTTP, as a client
// would: API instances wired as `parley serve` wires them (router on the
// primary through PgBouncer and the streaming replica, Redis cache, rollout
// state, monitors) on the real stack, two instances where a test needs them.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/parley-chat/parley/internal/cache"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/dbrouter"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/monitor"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/rollout"
	"github.com/parley-chat/parley/internal/stack"
)

func TestMain(m *testing.M) { os.Exit(stack.Main(m)) }

const adminToken = "adm_integration"

// service is one database and any number of API instances on it.
type service struct {
	t         *testing.T
	stack     *stack.Stack
	db        stack.Database
	pool      *pgxpool.Pool // for assertions
	instances []*client
}

func newService(t *testing.T) *service {
	t.Helper()
	s := stack.ForTest(t)
	db := s.NewDatabase(t)
	pool := openPool(t, db.PgBouncerURL, 4)
	if _, err := postgres.Migrate(context.Background(), pool, nil); err != nil {
		t.Fatal(err)
	}
	return &service{t: t, stack: s, db: db, pool: pool}
}

func openPool(t *testing.T, url string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec // PgBouncer, transaction pooling
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// instanceOptions vary an instance's wiring.
type instanceOptions struct {
	monitors bool // the database monitors, PgBouncer's included (as serve with --pgbouncer-admin-url)
}

// instance starts one API server wired as `parley serve` wires it (see
// cmd/parley/serve.go): the query tracer on every pool, a router on the
// primary through PgBouncer (exec mode) and the replica (prepared
// statements), the Redis cache with a key prefix of its own (the stack's
// Redis is shared by the package's tests), the rollout state read before
// serving and polled, the cursor key from the database.
func (s *service) instance(opt ...instanceOptions) *client {
	t := s.t
	t.Helper()
	var o instanceOptions
	if len(opt) > 0 {
		o = opt[0]
	}
	ctx := context.Background()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("instance log:\n%s", logs.String())
		}
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	qp, err := monitor.NewQueryPerformance(monitor.QueryPerformanceOptions{Registerer: reg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	router, err := dbrouter.New(ctx, dbrouter.Config{
		PrimaryURL: s.db.PgBouncerURL, PrimaryExecMode: "exec",
		ReplicaURLs: []string{s.db.ReplicaURL}, ReplicaExecMode: "cache_statement",
		PoolMaxConns: 10, ReplicaPoolMaxConns: 10,
		Registerer: reg, Logger: log,
		Tracer: func(target string) pgx.QueryTracer { return qp.Tracer(target) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(router.Close)
	rdb, err := cache.NewClient(s.stack.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	cch := cache.New(rdb, cache.Config{Logger: log, Registerer: reg, Prefix: s.db.Name + ":"})
	key, err := postgres.CursorKey(ctx, router.Primary(), "")
	if err != nil {
		t.Fatal(err)
	}
	cursors, err := chat.NewCursorCodec(key)
	if err != nil {
		t.Fatal(err)
	}
	rollouts := rollout.NewStore(router.Primary(), log, reg)
	if err := rollouts.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	var mon *monitor.Monitors
	if o.monitors {
		if mon, err = monitor.New(monitor.Config{Logger: log, Registerer: reg, Primary: router.Primary(),
			PgBouncerAdminURL: s.stack.PgBouncerAdminURL(), Queries: qp}); err != nil {
			t.Fatal(err)
		}
	}
	bg, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() })
	wg.Go(func() { rollouts.Run(bg) })
	wg.Go(func() { cch.Run(bg) })
	if mon != nil {
		wg.Go(func() { _ = mon.Run(bg) })
	}
	cfg := httpapi.Config{
		Logger: log, AccessLog: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})), Gatherer: reg, Registerer: reg,
		Checks:     []httpapi.Check{{Name: "primary", Required: true, Probe: router.Ping}, {Name: "cache", Probe: cch.Ping}},
		Store:      postgres.New(router.Primary()),
		Router:     router,
		Cache:      cch,
		Rollouts:   rollouts,
		Cursors:    cursors,
		AdminToken: adminToken,
	}
	if mon != nil {
		cfg.Monitors = mon
	}
	srv := httptest.NewServer(httpapi.New(cfg))
	t.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: 128}
	t.Cleanup(tr.CloseIdleConnections)
	c := &client{t: t, base: srv.URL, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		router: router, cache: cch, rollouts: rollouts, reg: reg}
	s.instances = append(s.instances, c)
	return c
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// client is a minimal API client of one instance (and a handle on its
// parts, for assertions).
type client struct {
	t        *testing.T
	base     string
	hc       *http.Client
	router   *dbrouter.Router
	cache    *cache.Cache
	rollouts *rollout.Store
	reg      *prometheus.Registry
}

type reply struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r reply) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("HTTP %d %q: %v", r.Status, r.Body, err)
	}
}

func (r reply) code(t *testing.T) string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	r.decode(t, &e)
	return e.Error.Code
}

// source is the reply's X-Read-Source.
func (r reply) source() string { return r.Header.Get("X-Read-Source") }

// raw is a request body sent as is (do JSON-encodes any other body).
type raw string

// do may run on any goroutine: it reports failures with t.Error, not Fatal.
func (c *client) do(method, path, token string, body any, header ...string) reply {
	var rd io.Reader
	if b, ok := body.(raw); ok {
		rd = bytes.NewReader([]byte(b))
	} else if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Error(err)
			return reply{}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Error(err)
		return reply{}
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Error(err)
		return reply{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func (c *client) must(status int, r reply) reply {
	c.t.Helper()
	if r.Status != status {
		c.t.Fatalf("HTTP %d, want %d: %s", r.Status, status, r.Body)
	}
	return r
}

type user struct {
	ID          string `json:"id"`
	Handle      string `json:"handle"`
	DisplayName string `json:"display_name"`
	Token       string `json:"token"`
}

type message struct {
	ID             string `json:"id"`
	ConversationID string `json:"conversation_id"`
	SenderID       string `json:"sender_id"`
	Body           string `json:"body"`
	CreatedAt      string `json:"created_at"`
	Cursor         string `json:"cursor"`
}

type conversation struct {
	ID            string   `json:"id"`
	Title         string   `json:"title"`
	MemberIDs     []string `json:"member_ids"`
	CreatedAt     string   `json:"created_at"`
	LastMessageAt *string  `json:"last_message_at"`
	LastMessage   *message `json:"last_message"`
	UnreadCount   int64    `json:"unread_count"`
}

type messagePage struct {
	Messages   []message `json:"messages"`
	HasMore    bool      `json:"has_more"`
	NextCursor *string   `json:"next_cursor"`
}

type conversationList struct {
	Conversations []conversation `json:"conversations"`
	NextCursor    *string        `json:"next_cursor"`
}

type unreadSummary struct {
	Total         int64 `json:"total"`
	Conversations []struct {
		ID          string `json:"id"`
		UnreadCount int64  `json:"unread_count"`
	} `json:"conversations"`
}

var seq atomic.Int64

func (c *client) createUser() user {
	c.t.Helper()
	h := fmt.Sprintf("it%d", seq.Add(1))
	var u user
	c.must(201, c.do("POST", "/v1/users", adminToken, map[string]string{"handle": h, "display_name": "Integration " + h})).decode(c.t, &u)
	return u
}

func (c *client) createConversation(owner user, title string, members ...user) conversation {
	c.t.Helper()
	ids := []string{}
	for _, m := range members {
		ids = append(ids, m.ID)
	}
	var conv conversation
	c.must(201, c.do("POST", "/v1/conversations", owner.Token, map[string]any{"title": title, "member_ids": ids})).decode(c.t, &conv)
	return conv
}

func (c *client) send(conv string, from user, body string) message {
	c.t.Helper()
	var m message
	c.must(201, c.do("POST", "/v1/conversations/"+conv+"/messages", from.Token, map[string]string{"body": body})).decode(c.t, &m)
	return m
}

func (c *client) page(conv string, as user, query string) messagePage {
	c.t.Helper()
	var p messagePage
	c.must(200, c.do("GET", "/v1/conversations/"+conv+"/messages"+query, as.Token, nil)).decode(c.t, &p)
	return p
}

// rolloutUpdate is a PUT /admin/rollouts body.
type rolloutUpdate struct {
	Percent *int  `json:"percent,omitempty"`
	Cache   *bool `json:"cache,omitempty"`
	Replica *bool `json:"replica,omitempty"`
}

func ptr[T any](v T) *T { return &v }

// setRollout changes an endpoint's rollout through c's admin API and makes
// every instance of the service apply it now (tests that measure the
// propagation itself use the admin API alone).
func (s *service) setRollout(c *client, endpoint string, u rolloutUpdate) {
	s.t.Helper()
	c.must(200, c.do("PUT", "/admin/rollouts/"+endpoint, adminToken, u))
	for _, in := range s.instances {
		if err := in.rollouts.Refresh(context.Background()); err != nil {
			s.t.Fatal(err)
		}
	}
}

// optimize puts every user of the endpoints on the optimized path with the
// cache and replicas as given. It first waits until the replica has
// replayed everything written so far: reads of other users' writes may
// lag (read-your-writes is per user), and the tests' own set-up is not what
// they check.
func (s *service) optimize(c *client, cacheOn, replicaOn bool, endpoints ...string) {
	s.t.Helper()
	s.caughtUp()
	if len(endpoints) == 0 {
		endpoints = rollout.Endpoints()
	}
	for _, ep := range endpoints {
		s.setRollout(c, ep, rolloutUpdate{Percent: ptr(100), Cache: ptr(cacheOn), Replica: ptr(replicaOn)})
	}
}

// caughtUp waits until the replica has replayed all the primary has written.
func (s *service) caughtUp() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := stack.WaitReplicaCaughtUp(ctx, s.db.PrimaryURL, s.db.ReplicaURL); err != nil {
		s.t.Fatal(err)
	}
}

// adminStatus is GET /admin/status.
type adminStatus struct {
	Replicas []struct {
		Name       string  `json:"name"`
		State      string  `json:"state"`
		LagBytes   int64   `json:"lag_bytes"`
		LagSeconds float64 `json:"lag_seconds"`
		Breaker    string  `json:"breaker"`
	} `json:"replicas"`
	Cache struct {
		State string `json:"state"`
	} `json:"cache"`
	Pools    map[string]json.RawMessage `json:"pools"`
	Rollouts map[string]struct {
		Percent int  `json:"percent"`
		Cache   bool `json:"cache"`
		Replica bool `json:"replica"`
	} `json:"rollouts"`
	Monitors map[string]json.RawMessage `json:"monitors"`
}

func (c *client) status() adminStatus {
	c.t.Helper()
	var st adminStatus
	c.must(200, c.do("GET", "/admin/status", adminToken, nil)).decode(c.t, &st)
	return st
}

// pauseReplay pauses WAL replay on the (shared) replica and resumes it in
// Cleanup, whatever happens.
func pauseReplay(t *testing.T, replicaURL string) {
	t.Helper()
	t.Cleanup(func() { resumeReplay(t, replicaURL) })
	execOn(t, replicaURL, `SELECT pg_wal_replay_pause()`)
}

func resumeReplay(t *testing.T, replicaURL string) {
	t.Helper()
	execOn(t, replicaURL, `SELECT pg_wal_replay_resume()`)
}

func execOn(t *testing.T, url, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Errorf("connect: %v", err)
		return
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Errorf("%s: %v", sql, err)
	}
}

// stopComponent stops a stack component and brings it back in Cleanup (the
// package's tests share the stack).
func (s *service) stopComponent(name string) {
	s.t.Helper()
	s.t.Cleanup(func() { s.startComponents() })
	if err := s.stack.StopComponent(context.Background(), name); err != nil {
		s.t.Fatal(err)
	}
}

func (s *service) startComponents() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := stack.Up(ctx, stack.Config{DataDir: s.stack.Dir}); err != nil {
		s.t.Errorf("restart the stack: %v", err)
	}
}

// waitFor polls cond every 10 ms until it holds, and returns how long that
// took; it fails the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// percentile of ds (sorted in place), p in 0..100, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(p/100*float64(len(ds))+0.999999) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// counterValue sums the samples of a counter family in reg whose labels
// include want.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
