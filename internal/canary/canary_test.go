package canary_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/app"
	"github.com/parley-chat/parley/internal/canary"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/monitor"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/rollout"
	"github.com/parley-chat/parley/internal/stack"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

func TestMain(m *testing.M) {
	os.Exit(stacktest.Main(m, stacktest.Migrated(postgres.SchemaFingerprint(), postgres.Migrate)))
}

const adminToken = "adm_canary_test"

// env is one API server built by internal/app on a fresh database of the
// test stack (primary through PgBouncer, the streaming replica, Redis, the
// PgBouncer monitor polling every second), registered with the stack's
// Prometheus under a deployment label of its own, with users and
// conversations to read.
type env struct {
	t          *testing.T
	stack      *stacktest.Stack
	db         stacktest.Database
	app        *app.App
	client     *stacktest.Client
	store      *canary.Store
	deployment string
	users      []stacktest.User
	convs      map[string]string // user id → a conversation of theirs
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := stacktest.ForTest(t)
	db := s.NewDatabase(t)
	ctx := context.Background()
	logs := &stacktest.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	a, err := app.New(ctx, app.Config{
		PrimaryURL: db.PgBouncerURL, PrimaryExecMode: "exec",
		ReplicaURLs: []string{db.ReplicaURL}, ReplicaExecMode: "cache_statement",
		RedisURL: s.RedisURL(), CachePrefix: db.Name + ":",
		AdminToken: adminToken, PrimaryPoolConns: 10, ReplicaPoolConns: 10,
		NoMonitors: true, Logger: log, AccessLog: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	a.Start()
	// The PgBouncer monitor as serve runs it, polling every second here.
	mon, err := monitor.New(monitor.Config{Logger: log, Registerer: a.Registry, PgBouncerAdminURL: s.PgBouncerAdminURL(),
		PgBouncer: monitor.PgBouncerOptions{Interval: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	mctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = mon.Run(mctx) })
	t.Cleanup(func() { stop(); wg.Wait() })
	srv := httptest.NewServer(a.Handler)
	t.Cleanup(srv.Close)
	c := stacktest.NewClient(t, srv.URL, adminToken)
	stacktest.WaitFor(t, 20*time.Second, "the server ready with its replica", func() bool {
		return c.Do("GET", "/readyz", "", nil).Status == 200 && strings.Contains(string(c.Do("GET", "/readyz", "", nil).Body), `"status":"ok"`)
	})
	e := &env{t: t, stack: s, db: db, app: a, client: c, deployment: db.Name, convs: map[string]string{}}
	// Users until both cohorts of the first stage have several.
	for in := 0; len(e.users) < 40 || in < 4; {
		u := c.CreateUser()
		e.users = append(e.users, u)
		id, _ := strconv.ParseInt(u.ID, 10, 64)
		if rollout.InRollout(chat.EndpointMessageHistory, id, 10) {
			in++
		}
		if len(e.users) > 400 {
			t.Fatal("no user lands in the 10% cohort")
		}
	}
	for i := 0; i+1 < len(e.users); i += 2 {
		a, b := e.users[i], e.users[i+1]
		conv := c.CreateConversation(a, "canary", b)
		c.Send(conv.ID, a, "hello")
		e.convs[a.ID], e.convs[b.ID] = conv.ID, conv.ID
	}
	if len(e.users)%2 == 1 {
		last := e.users[len(e.users)-1]
		conv := c.CreateConversation(last, "alone")
		e.convs[last.ID] = conv.ID
	}
	remove, err := s.RegisterTarget(e.deployment, strings.TrimPrefix(srv.URL, "http://"), map[string]string{"deployment": e.deployment})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	if e.store, err = canary.OpenStore(ctx, db.PrimaryURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.store.Close)
	// Prometheus has scraped the server (with its rollout state).
	e.waitScraped()
	return e
}

func (e *env) waitScraped() {
	e.t.Helper()
	ctx := context.Background()
	cfg := e.config()
	if err := cfg.Validate(stack.ScrapeInterval); err != nil {
		e.t.Fatal(err)
	}
	j, err := canary.NewJudge(e.stack.PrometheusURL(), &cfg, stack.ScrapeInterval)
	if err != nil {
		e.t.Fatal(err)
	}
	stacktest.WaitFor(e.t, 30*time.Second, "Prometheus scraping the test server", func() bool {
		chk := j.Check(ctx, canary.JudgeInput{Now: time.Now(), Percent: 0, SettledAt: time.Now()})
		return chk.Measurements[0].Verdict == canary.Pass
	})
}

// config is the short-stage canary the tests run: 2 s checks on 5 s
// windows, 6 s to settle, 4 s of dwell and 2 passing checks per stage.
func (e *env) config() canary.Config {
	var c canary.Config
	c.Endpoint = chat.EndpointMessageHistory
	c.Optimized.Cache, c.Optimized.Replica = true, true
	c.Interval, c.Window, c.Settle, c.Dwell, c.MinChecks = 2*time.Second, 5*time.Second, 6*time.Second, 4*time.Second, 2
	c.Selector = fmt.Sprintf("deployment=%q", e.deployment)
	c.SLO.P95 = 350 * time.Millisecond
	c.Triggers.Errors.MinRequests = 40
	c.Triggers.Latency.MinRequests = 40
	c.Triggers.MannWhitney.MinPoints = 3
	c.Triggers.QueueWait.RefWindow = 10 * time.Second
	return c
}

// load reads history as every user in turn (and sends now and then) from
// 4 workers, about 250 requests a second, until the test ends or stop is
// called.
func (e *env) load() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var n atomic.Int64
	for w := range 4 {
		wg.Go(func() {
			for i := w; ctx.Err() == nil; i += 4 {
				u := e.users[i%len(e.users)]
				if i%50 == 0 {
					e.client.Do("POST", "/v1/conversations/"+e.convs[u.ID]+"/messages", u.Token, map[string]string{"body": "load"})
				} else {
					e.client.Do("GET", "/v1/conversations/"+e.convs[u.ID]+"/messages?limit=20", u.Token, nil)
				}
				n.Add(1)
				time.Sleep(time.Duration(12+rand.IntN(8)) * time.Millisecond)
			}
		})
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			e.t.Logf("load: %d requests", n.Load())
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// run runs a controller of cfg and returns its result; its progress lines
// go to the test log.
func (e *env) run(ctx context.Context, cfg canary.Config, reg prometheus.Registerer, owner string) (canary.Result, error) {
	return canary.RunCanary(ctx, cfg, e.store, canary.Options{
		Prometheus: e.stack.PrometheusURL(), Scrape: stack.ScrapeInterval,
		Target: e.client.Base, AdminToken: adminToken, Owner: owner,
		Out: testWriter{e.t}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg,
	})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (e *env) percent() int {
	e.t.Helper()
	r, err := canary.NewAdminClient(e.client.Base, adminToken).Get(context.Background(), chat.EndpointMessageHistory)
	if err != nil {
		e.t.Fatal(err)
	}
	return r.Percent
}

func (e *env) decisions(runID int64) []canary.Decision {
	e.t.Helper()
	ds, err := e.store.Decisions(context.Background(), runID, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	return ds
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestHealthyRunPromotes: under load, a healthy optimized path goes 10 →
// 25 → 50 → 100 and the run ends promoted, every stage and decision stored.
func TestHealthyRunPromotes(t *testing.T) {
	e := newEnv(t)
	e.load()
	reg := prometheus.NewRegistry()
	start := time.Now()
	res, err := e.run(ctxT(t, 3*time.Minute), e.config(), reg, "healthy")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("promoted in %v", time.Since(start).Round(time.Millisecond))
	if res.Outcome != canary.Promoted {
		t.Fatalf("outcome %q (%s: %s), want promoted", res.Outcome, res.Trigger, res.Reason)
	}
	if p := e.percent(); p != 100 {
		t.Errorf("rollout at %d%%, want 100", p)
	}
	ctx := context.Background()
	stages, err := e.store.Stages(ctx, res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range stages {
		got = append(got, fmt.Sprintf("%d:%s", s.Percent, deref(s.Outcome)))
	}
	if want := "10:advanced 25:advanced 50:advanced 100:promoted"; strings.Join(got, " ") != want {
		t.Errorf("stages %v, want %s", got, want)
	}
	// Every advance followed passing checks that compared both cohorts.
	var passes int
	for _, d := range e.decisions(res.RunID) {
		if d.Verdict != string(canary.Pass) {
			continue
		}
		passes++
		var ms []canary.Measurement
		if err := json.Unmarshal(d.Measurements, &ms); err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.Trigger == canary.TriggerErrors && (m.Samples["optimized"] < 40 || m.Samples["baseline"] < 40 || len(m.Queries) == 0) {
				t.Errorf("a passing check at %d%% with errors measured on %v requests: %+v", d.StagePercent, m.Samples, m)
			}
		}
	}
	if passes < 6 {
		t.Errorf("%d passing checks, want at least 2 per stage", passes)
	}
	if v := stacktest.MustMetric(t, reg, "parley_canary_stage_percent", map[string]string{"endpoint": chat.EndpointMessageHistory}); v != 100 {
		t.Errorf("parley_canary_stage_percent %v, want 100", v)
	}
	if v := stacktest.MustMetric(t, reg, "parley_canary_checks_total", map[string]string{"verdict": "pass"}); v != float64(passes) {
		t.Errorf("parley_canary_checks_total{verdict=pass} %v, want %d", v, passes)
	}
	if v := stacktest.MustMetric(t, reg, "parley_canary_rollbacks_total", nil); v != 0 {
		t.Errorf("parley_canary_rollbacks_total %v, want 0", v)
	}
}

// TestReplicaFaultRollsBack: replay paused on the replica (which only the
// optimized cohort reads) opens its breaker; the next check rolls the
// endpoint back to 0% and the run ends rolled back, the audit naming the
// trigger and its values.
func TestReplicaFaultRollsBack(t *testing.T) {
	e := newEnv(t)
	e.load()
	ctx := ctxT(t, 4*time.Minute)
	type outcome struct {
		res canary.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := e.run(ctx, e.config(), prometheus.NewRegistry(), "fault")
		done <- outcome{res, err}
	}()
	// Mid-way: once the 25% stage is live.
	stacktest.WaitFor(t, 2*time.Minute, "the 25% stage", func() bool {
		r, err := e.store.LiveRun(ctx, chat.EndpointMessageHistory)
		return err == nil && r != nil && r.StagePercent == 25
	})
	paused := time.Now()
	stacktest.PauseReplay(t, e.db.ReplicaURL)
	var o outcome
	select {
	case o = <-done:
	case <-ctx.Done():
		t.Fatal("no end of the run within 4 minutes")
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
	if o.res.Outcome != canary.RolledBack || o.res.Trigger != canary.TriggerBreaker {
		t.Fatalf("outcome %q trigger %q (%s), want rolled_back by breaker", o.res.Outcome, o.res.Trigger, o.res.Reason)
	}
	if p := e.percent(); p != 0 {
		t.Errorf("rollout at %d%% after the rollback, want 0", p)
	}
	// The audit: the check that failed, its trigger and values, then the
	// confirmed rollback.
	var decided, rolledBack *canary.Decision
	checksAfterPause := 0
	ds := e.decisions(o.res.RunID)
	for i := range ds {
		d := &ds[i]
		if d.Verdict != "" && !d.At.Before(paused) {
			checksAfterPause++
		}
		if d.Action == canary.ActionRollback && decided == nil {
			decided = d
		}
		if d.Action == "rolled_back" {
			rolledBack = d
		}
	}
	if decided == nil || rolledBack == nil {
		t.Fatalf("no rollback decision in the audit: %+v", ds)
	}
	if decided.Trigger != canary.TriggerBreaker || decided.Verdict != string(canary.Fail) || decided.StagePercent != 25 {
		t.Errorf("rollback decision %+v, want a failed breaker check at 25%%", decided)
	}
	var ms []canary.Measurement
	if err := json.Unmarshal(decided.Measurements, &ms); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range ms {
		if m.Trigger == canary.TriggerBreaker {
			found = true
			if m.Verdict != canary.Fail || m.Values["openings"]+m.Values["stuck_open"] <= 0 || len(m.Queries) != 3 {
				t.Errorf("breaker measurement %+v, want a failure with its openings and queries", m)
			}
		}
	}
	if !found {
		t.Errorf("no breaker measurement in %s", decided.Measurements)
	}
	// At 0% within one interval of the decision, and decided by the first
	// or second check after the pause (one may have run before the open
	// breaker was scraped).
	if d := rolledBack.At.Sub(decided.At); d > e.config().Interval {
		t.Errorf("at 0%% %v after the decision, want within one interval (%v)", d, e.config().Interval)
	}
	if checksAfterPause > 2 {
		t.Errorf("rolled back at check %d after the pause, want the first or second", checksAfterPause)
	}
	t.Logf("detection: replay paused → rollback decided %v → at 0%% %v (checks after the pause: %d)",
		decided.At.Sub(paused).Round(time.Millisecond), rolledBack.At.Sub(paused).Round(time.Millisecond), checksAfterPause)
	run, err := e.store.Run(context.Background(), o.res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if run.State != canary.StateRolledBack || deref(run.Trigger) != canary.TriggerBreaker {
		t.Errorf("run %s trigger %s, want rolled_back by breaker", run.State, deref(run.Trigger))
	}
}

// TestTooLittleTrafficHolds: without traffic every check is inconclusive;
// the stage holds (no advance, no failure) and the run pauses for a human
// after the inconclusive limit.
func TestTooLittleTrafficHolds(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.InconclusiveLimit = 8 * time.Second
	ctx, cancel := context.WithCancel(ctxT(t, 2*time.Minute))
	done := make(chan error, 1)
	var res canary.Result
	go func() {
		var err error
		res, err = e.run(ctx, cfg, prometheus.NewRegistry(), "quiet")
		done <- err
	}()
	// A trickle: one read a second, far under the 40 a window needs.
	trickle := time.NewTicker(time.Second)
	defer trickle.Stop()
	var run *canary.Run
	deadline := time.Now().Add(90 * time.Second)
	for run == nil || run.State != canary.StatePaused {
		if time.Now().After(deadline) {
			t.Fatalf("not paused after 90 s: %+v", run)
		}
		select {
		case err := <-done:
			t.Fatalf("controller ended: %+v %v", res, err)
		case <-trickle.C:
		}
		u := e.users[0]
		e.client.Do("GET", "/v1/conversations/"+e.convs[u.ID]+"/messages", u.Token, nil)
		var err error
		if run, err = e.store.LiveRun(ctx, chat.EndpointMessageHistory); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, canary.ErrInterrupted) {
		t.Fatalf("controller: %v, want interrupted", err)
	}
	if p := e.percent(); p != 10 {
		t.Errorf("rollout at %d%%, want 10 (held)", p)
	}
	checks := 0
	for _, d := range e.decisions(run.ID) {
		switch {
		case d.Action == canary.ActionAdvance || d.Action == canary.ActionRollback || d.Action == "promoted":
			t.Errorf("decision %s with too little traffic: %+v", d.Action, d)
		case d.Verdict == string(canary.Inconclusive):
			checks++
		case d.Verdict != "":
			t.Errorf("a %s check with too little traffic: %s", d.Verdict, d.Reason)
		}
	}
	if checks < 3 {
		t.Errorf("%d inconclusive checks, want at least 3", checks)
	}
	if run.StagePercent != 10 {
		t.Errorf("paused run at %d%%, want 10", run.StagePercent)
	}
}

// TestResumeAndLease: a controller stopped at 25% leaves the run there; a
// second controller refuses while the first holds the lease; a new
// controller resumes at 25% (never back to 10%) and promotes.
func TestResumeAndLease(t *testing.T) {
	e := newEnv(t)
	e.load()
	ctx := ctxT(t, 5*time.Minute)
	firstCtx, kill := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := e.run(firstCtx, e.config(), prometheus.NewRegistry(), "first")
		done <- err
	}()
	stacktest.WaitFor(t, 2*time.Minute, "the 25% stage", func() bool {
		r, err := e.store.LiveRun(ctx, chat.EndpointMessageHistory)
		return err == nil && r != nil && r.StagePercent == 25
	})
	// A second controller on the same endpoint refuses at once.
	start := time.Now()
	_, err := e.run(ctx, e.config(), prometheus.NewRegistry(), "second")
	if !errors.Is(err, canary.ErrLeaseHeld) || !strings.Contains(err.Error(), "first") {
		t.Fatalf("second controller: %v, want ErrLeaseHeld naming the first", err)
	}
	t.Logf("second controller refused in %v: %v", time.Since(start).Round(time.Millisecond), err)
	kill()
	if err := <-done; !errors.Is(err, canary.ErrInterrupted) {
		t.Fatalf("first controller: %v, want interrupted", err)
	}
	if p := e.percent(); p != 25 {
		t.Fatalf("rollout at %d%% after the controller stopped, want 25 (left as it was)", p)
	}
	run, err := e.store.LiveRun(ctx, chat.EndpointMessageHistory)
	if err != nil || run == nil {
		t.Fatalf("live run after the stop: %v %v", run, err)
	}
	res, err := e.run(ctx, e.config(), prometheus.NewRegistry(), "third")
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != canary.Promoted || res.RunID != run.ID {
		t.Fatalf("resumed run: %+v, want run %d promoted", res, run.ID)
	}
	var actions []string
	for _, d := range e.decisions(run.ID) {
		if d.Verdict == "" {
			actions = append(actions, fmt.Sprintf("%s@%d", d.Action, d.StagePercent))
		}
	}
	if want := "start@10 advance@25 resume@25 advance@50 advance@100 promoted@100"; strings.Join(actions, " ") != want {
		t.Errorf("actions %v, want %s", actions, want)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// TestLeaseEndsWithItsSession: one lease per endpoint, naming its holder;
// a controller that dies (its session ended by the server, as when the
// process is killed) frees it for the next at once.
func TestLeaseEndsWithItsSession(t *testing.T) {
	s := stacktest.ForTest(t)
	db := s.NewDatabase(t)
	ctx := ctxT(t, time.Minute)
	store, err := canary.OpenStore(ctx, db.PrimaryURL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	first, err := store.Acquire(ctx, chat.EndpointMessageHistory, "one")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Release()
	if _, err := store.Acquire(ctx, chat.EndpointMessageHistory, "two"); !errors.Is(err, canary.ErrLeaseHeld) || !strings.Contains(err.Error(), "parley canary one") {
		t.Fatalf("second lease: %v, want ErrLeaseHeld naming the first", err)
	}
	other, err := store.Acquire(ctx, chat.EndpointConversationList, "two")
	if err != nil {
		t.Fatalf("another endpoint's lease: %v", err)
	}
	other.Release()
	stacktest.Exec(t, db.PrimaryURL, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'parley canary one'`)
	if err := first.Check(ctx); err == nil {
		t.Error("the dead lease still checks out")
	}
	var next *canary.Lease
	stacktest.WaitFor(t, 10*time.Second, "the lease free after its session ended", func() bool {
		next, err = store.Acquire(ctx, chat.EndpointMessageHistory, "three")
		return err == nil
	})
	next.Release()
}

// TestDryRunChangesNothing: a dry run judges the live rollout (here 50 %
// set by hand) and reports what it would do, storing a dry run, and never
// changes the rollout.
func TestDryRunChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.load()
	fifty, on := 50, true
	if _, err := canary.NewAdminClient(e.client.Base, adminToken).Set(context.Background(), chat.EndpointMessageHistory,
		chat.RolloutUpdate{Percent: &fifty, Cache: &on, Replica: &on}); err != nil {
		t.Fatal(err)
	}
	cfg := e.config()
	cfg.Stages = []int{50, 100}
	res, err := canary.RunCanary(ctxT(t, 3*time.Minute), cfg, e.store, canary.Options{
		Prometheus: e.stack.PrometheusURL(), Scrape: stack.ScrapeInterval, Target: e.client.Base, AdminToken: adminToken,
		DryRun: true, Out: testWriter{t}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != canary.Promoted {
		t.Fatalf("dry run: %+v, want a would-be promotion", res)
	}
	if p := e.percent(); p != 50 {
		t.Errorf("rollout at %d%% after a dry run, want 50 (untouched)", p)
	}
	run, err := e.store.Run(context.Background(), res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if !run.DryRun {
		t.Error("the run is not stored as a dry run")
	}
	if live, err := e.store.LiveRun(context.Background(), chat.EndpointMessageHistory); err != nil || live != nil {
		t.Errorf("a dry run left a live run: %+v %v", live, err)
	}
	ds := e.decisions(res.RunID)
	if last := ds[len(ds)-1]; !strings.Contains(last.Reason, "dry run") {
		t.Errorf("last decision %+v does not say it was a dry run", last)
	}
}
