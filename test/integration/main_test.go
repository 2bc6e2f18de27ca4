// Package integration drives the whole service over HTTP, as a client
// would: API instances wired as `parley serve` wires them (router on the
// primary through PgBouncer and the streaming replicas, Redis cache, rollout
// state, monitors) on the real stack, two instances where a test needs them.
//
// The stack has the shape PARLEY_TEST_SHAPE names (stacktest.ShapeFromEnv):
// the default (one replica, one Redis), or for `make test-scale`
// replicas=2,redis=cluster, where the cache, invalidation, routing and
// read-your-writes tests run again on two replicas and a Redis Cluster.
package integration

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/app"
	"github.com/parley-chat/parley/internal/cache"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/dbrouter"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/rollout"
	"github.com/parley-chat/parley/internal/stack"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

func TestMain(m *testing.M) {
	os.Exit(stacktest.Main(m, stacktest.Migrated(postgres.SchemaFingerprint(), postgres.Migrate), stacktest.ShapeFromEnv()))
}

const adminToken = "adm_integration"

// service is one database and any number of API instances on it.
type service struct {
	t         testing.TB
	stack     *stacktest.Stack
	db        stacktest.Database
	pool      *pgxpool.Pool // for assertions
	instances []*client
}

func newService(t testing.TB) *service {
	t.Helper()
	s := stacktest.ForTest(t)
	db := s.NewDatabase(t) // migrated (the package's template)
	pool := openPool(t, db.PgBouncerURL, 4)
	return &service{t: t, stack: s, db: db, pool: pool}
}

func openPool(t testing.TB, url string, maxConns int32) *pgxpool.Pool {
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

// instanceOptions vary an instance's configuration.
type instanceOptions struct {
	monitors bool // the database monitors, PgBouncer's included (as serve with --pgbouncer-admin-url)
	// primaryPoolConns and acquireTimeout override the primary pool's size
	// (default 10) and the acquire bound (default the router's).
	primaryPoolConns int
	acquireTimeout   time.Duration
	// requestTimeout overrides the request deadline (default the server's).
	requestTimeout time.Duration
	// dbBudget overrides the database budget of a request (default
	// chatsvc.DefaultDBBudget).
	dbBudget time.Duration
	// patientCache gives each Redis round trip a second instead of the
	// production 30 ms: for tests of what the cache guarantees while Redis
	// answers, which a busy machine must not turn into a Redis outage
	// (fail-open: a timed-out invalidation is replayed later). They check
	// that no Redis operation failed (cacheErrors).
	patientCache bool
}

// instance starts one API server built by app.New, as `parley serve`
// builds it: a router on the primary through PgBouncer (exec mode) and every
// replica (prepared statements), the Redis cache (a cluster client on a
// Redis Cluster) with a key prefix of its own (the stack's Redis is shared
// by the package's tests), the rollout
// state read before serving and polled, the cursor key from the database.
// Its log is printed when the test fails.
func (s *service) instance(opt ...instanceOptions) *client {
	t := s.t
	t.Helper()
	var o instanceOptions
	if len(opt) > 0 {
		o = opt[0]
	}
	logs := &stacktest.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("instance log:\n%s", logs.String())
		}
	})
	cfg := app.Config{
		PrimaryURL: s.db.PgBouncerURL, PrimaryExecMode: "exec",
		ReplicaURLs: s.db.ReplicaURLs, ReplicaExecMode: "cache_statement",
		RedisURL: s.stack.RedisURL(), CachePrefix: s.db.Name + ":",
		AdminToken:       adminToken,
		PrimaryPoolConns: 10, ReplicaPoolConns: 10,
		NoMonitors: !o.monitors,
		Logger:     log,
		AccessLog:  slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if o.monitors {
		cfg.PgBouncerAdminURL = s.stack.PgBouncerAdminURL()
	}
	if o.primaryPoolConns > 0 {
		cfg.PrimaryPoolConns = o.primaryPoolConns
	}
	cfg.AcquireTimeout = o.acquireTimeout
	cfg.RequestTimeout = o.requestTimeout
	cfg.DBBudget = o.dbBudget
	if o.patientCache {
		cfg.CacheOpTimeout = time.Second
	}
	a, err := app.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	a.Start()
	srv := httptest.NewServer(a.Handler)
	t.Cleanup(srv.Close)
	c := &client{Client: stacktest.NewClient(t, srv.URL, adminToken), app: a,
		router: a.Router, cache: a.Cache, rollouts: a.Rollouts, reg: a.Registry, logs: logs}
	s.instances = append(s.instances, c)
	return c
}

// client is an API client of one instance (stacktest.Client), and a handle
// on the instance's parts, for assertions.
type client struct {
	*stacktest.Client
	app      *app.App
	router   *dbrouter.Router
	cache    *cache.Cache
	rollouts *rollout.Store
	reg      *prometheus.Registry
	logs     *stacktest.LogBuffer // the instance's log
}

// The API's resources as the tests decode them.
type (
	reply            = stacktest.Reply
	user             = stacktest.User
	message          = stacktest.Message
	conversation     = stacktest.Conversation
	messagePage      = stacktest.MessagePage
	conversationList = stacktest.ConversationList
	unreadSummary    = stacktest.Unread
)

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
	c.Must(200, c.Do("PUT", "/admin/rollouts/"+endpoint, adminToken, u))
	for _, in := range s.instances {
		if err := in.rollouts.Refresh(context.Background()); err != nil {
			s.t.Fatal(err)
		}
	}
}

// optimize puts every user of the endpoints on the optimized path with the
// cache and replicas as given. It first waits until every replica has
// replayed everything written so far: reads of other users' writes may
// lag (read-your-writes is per user), and the tests' own set-up is not what
// they check.
func (s *service) optimize(c *client, cacheOn, replicaOn bool, endpoints ...string) {
	s.t.Helper()
	s.caughtUp()
	if len(endpoints) == 0 {
		endpoints = chat.RolloutEndpoints()
	}
	for _, ep := range endpoints {
		s.setRollout(c, ep, rolloutUpdate{Percent: ptr(100), Cache: ptr(cacheOn), Replica: ptr(replicaOn)})
	}
}

// caughtUp waits until every replica has replayed all the primary has written.
func (s *service) caughtUp() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, u := range s.db.ReplicaURLs {
		if err := stack.WaitReplicaCaughtUp(ctx, s.db.PrimaryURL, u); err != nil {
			s.t.Fatal(err)
		}
	}
}

// pauseReplay pauses replay on every replica (resumed in Cleanup at the
// latest): no replica can then serve a read that needs a newer write.
func (s *service) pauseReplay(t *testing.T) {
	t.Helper()
	for _, u := range s.db.ReplicaURLs {
		stacktest.PauseReplay(t, u)
	}
}

// resumeReplay resumes replay on every replica.
func (s *service) resumeReplay(t *testing.T) {
	t.Helper()
	for _, u := range s.db.ReplicaURLs {
		stacktest.ResumeReplay(t, u)
	}
}

// breakers are the instance's replica breakers, e.g. "closed closed".
func (c *client) breakers() string {
	var out []string
	for _, r := range c.status().Replicas {
		out = append(out, r.Breaker)
	}
	return strings.Join(out, " ")
}

// allBreakers is state repeated once per replica of the stack.
func (s *service) allBreakers(state string) string {
	return strings.TrimSpace(strings.Repeat(state+" ", len(s.db.ReplicaURLs)))
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
	c.T.Helper()
	var st adminStatus
	c.Must(200, c.Do("GET", "/admin/status", adminToken, nil)).Decode(c.T, &st)
	return st
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

// percentile of ds (sorted in place), p in 0..100, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(p/100*float64(len(ds))+0.999999) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// counterMetric sums the samples of a counter family in reg whose labels
// include want (0 when none).
func counterMetric(t testing.TB, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	v, _ := stacktest.Metric(t, reg, name, want)
	return v
}

// counts is a fingerprint of everything the API can write.
func (s *service) counts() string {
	s.t.Helper()
	var out string
	err := s.pool.QueryRow(context.Background(), `
		SELECT format('users=%s conversations=%s members=%s messages=%s markers=%s last=%s',
			(SELECT count(*) FROM users), (SELECT count(*) FROM conversations),
			(SELECT count(*) FROM conversation_members), (SELECT count(*) FROM messages),
			(SELECT coalesce(sum(last_read_seq), 0) FROM conversation_members),
			(SELECT coalesce(sum(last_seq), 0) FROM conversations))`).Scan(&out)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// cacheErrors is the number of failed Redis operations of c's cache so far.
func (c *client) cacheErrors(t *testing.T) float64 {
	t.Helper()
	v, _ := stacktest.Metric(t, c.reg, "parley_cache_errors_total", nil)
	return v
}

// cacheErrorsByOp is the instance's failed Redis operations by kind (op
// label: lookup, store, token, epoch, …), read in one gather so that the
// kinds add up to one moment's total.
func (c *client) cacheErrorsByOp(t *testing.T) map[string]float64 {
	t.Helper()
	mfs, err := c.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "parley_cache_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "op" {
					out[lp.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}
