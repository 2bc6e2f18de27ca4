//go:build scale

// Package scale tests Parley on the larger local shape — two streaming
// replicas, a Redis Cluster of three primaries, two API instances — with
// real processes only: the topology commands (parley stack, parley dev
// --instances 2), every cache key of an owner in one cluster slot, reads
// spread over the replicas and kept off a paused or stopped one, and a
// cluster primary killed under load. (`make test-scale` also runs the
// integration suite's cache, invalidation, routing and read-your-writes
// tests on this shape: PARLEY_TEST_SHAPE.)
package scale

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/parley-chat/parley/internal/app"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/stack"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// shape is the topology of this package's stack.
var shape = stacktest.Shape{Replicas: 2, Redis: stack.RedisCluster}

func TestMain(m *testing.M) {
	os.Exit(stacktest.Main(m, stacktest.Migrated(postgres.SchemaFingerprint(), postgres.Migrate), shape))
}

const adminToken = "adm_scale"

// service is one test database and the API instances on it.
type service struct {
	t     *testing.T
	stack *stacktest.Stack
	db    stacktest.Database
}

func newService(t *testing.T) *service {
	t.Helper()
	s := stacktest.ForTest(t)
	if got := s.Shape(); got != shape {
		t.Fatalf("the package's stack has the shape %s, want %s", got, shape)
	}
	return &service{t: t, stack: s, db: s.NewDatabase(t)}
}

// instance is one API server built by app.New as `parley serve` builds it
// on this stack: the primary through PgBouncer, both replicas direct, the
// Redis Cluster (a cluster client from the stack's PARLEY_REDIS_URL), with
// a key prefix of the test's own.
type instance struct {
	*stacktest.Client
	app *app.App
}

func (s *service) instance() *instance {
	t := s.t
	t.Helper()
	logs := &stacktest.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("instance log:\n%s", logs.String())
		}
	})
	a, err := app.New(context.Background(), app.Config{
		PrimaryURL: s.db.PgBouncerURL, PrimaryExecMode: "exec",
		ReplicaURLs: s.db.ReplicaURLs, ReplicaExecMode: "cache_statement",
		RedisURL: s.stack.RedisURL(), CachePrefix: s.db.Name + ":",
		AdminToken: adminToken, PrimaryPoolConns: 10, ReplicaPoolConns: 10,
		NoMonitors: true, Logger: log,
		AccessLog: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	a.Start()
	srv := httptest.NewServer(a.Handler)
	t.Cleanup(srv.Close)
	return &instance{Client: stacktest.NewClient(t, srv.URL, adminToken), app: a}
}

// rollout sets every read endpoint's rollout to 100 % with the cache and
// the replicas as given, and makes every instance apply it now. It first
// waits until both replicas have replayed everything so far.
func (s *service) rollout(cacheOn, replicaOn bool, ins ...*instance) {
	s.t.Helper()
	s.caughtUp()
	body := map[string]any{"percent": 100, "cache": cacheOn, "replica": replicaOn}
	for _, ep := range chat.RolloutEndpoints() {
		ins[0].Must(200, ins[0].Do("PUT", "/admin/rollouts/"+ep, adminToken, body))
	}
	for _, in := range ins {
		if err := in.app.Rollouts.Refresh(context.Background()); err != nil {
			s.t.Fatal(err)
		}
	}
}

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

// restartInCleanup brings every stopped component back when the test ends
// (the package's tests share the stack).
func (s *service) restartInCleanup() {
	s.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		if _, err := stack.Up(ctx, stack.Config{DataDir: s.stack.Dir}); err != nil {
			s.t.Errorf("restart the stack: %v", err)
		}
	})
}

// replicaReads is how many reads each replica served, summed over the
// instances, by the router's names (replica1, replica2).
func replicaReads(ins ...*instance) map[string]int64 {
	out := map[string]int64{}
	for _, in := range ins {
		for _, st := range in.app.Router.Status() {
			out[st.Name] += st.Reads
		}
	}
	return out
}

// nodes are direct clients of the cluster's nodes (not a cluster client:
// each sees only its own keys), closed in Cleanup.
func (s *service) nodes() []*redis.Client {
	s.t.Helper()
	var out []*redis.Client
	for _, addr := range s.stack.RedisAddrs() {
		// No handshake Redis 7.0 answers with an ERR (INFO errorstats
		// would count it): no CLIENT SETINFO, no MAINT_NOTIFICATIONS.
		c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true,
			MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
		s.t.Cleanup(func() { c.Close() })
		out = append(out, c)
	}
	return out
}

// tally counts what a load loop saw, safe for concurrent use.
type tally struct {
	mu       sync.Mutex
	bySource map[string]int
	errors   []string
	stale    []string
}

func newTally() *tally { return &tally{bySource: map[string]int{}} }

func (y *tally) source(src string) {
	y.mu.Lock()
	y.bySource[src]++
	y.mu.Unlock()
}

func (y *tally) fail(format string, args ...any) {
	y.mu.Lock()
	y.errors = append(y.errors, fmt.Sprintf(format, args...))
	y.mu.Unlock()
}

func (y *tally) staleRead(format string, args ...any) {
	y.mu.Lock()
	y.stale = append(y.stale, fmt.Sprintf(format, args...))
	y.mu.Unlock()
}

// snapshot returns copies of the counts.
func (y *tally) snapshot() (bySource map[string]int, errors, stale []string) {
	y.mu.Lock()
	defer y.mu.Unlock()
	bySource = map[string]int{}
	for k, v := range y.bySource {
		bySource[k] = v
	}
	return bySource, append([]string(nil), y.errors...), append([]string(nil), y.stale...)
}

func (y *tally) reads() int {
	y.mu.Lock()
	defer y.mu.Unlock()
	n := 0
	for _, v := range y.bySource {
		n += v
	}
	return n
}

// upAgain runs stack.Up on the package's stack: it restarts what a test
// stopped, with the shape the stack has.
func (s *service) upAgain(ctx context.Context) (*stack.Stack, error) {
	return stack.Up(ctx, stack.Config{DataDir: s.stack.Dir})
}
