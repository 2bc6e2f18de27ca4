package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/internal/app"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/stack"
)

// Config is a run of `parley chaos`.
type Config struct {
	// Scenarios to run, in order (Names() lists them).
	Scenarios []string
	// Short shortens every phase (make test): the suite in a few minutes.
	Short bool
	// Clients is the number of workload clients (writers); Rate each
	// client's requests per second.
	Clients int
	Rate    float64
	// Targets are the base URLs of running servers to test instead of two
	// built here (--target); DataDir is then the stack they run on, whose
	// daemons the faults act on. Scenarios that need a proxy inside the
	// servers' connections (partition, redis-partial) cannot run there.
	Targets    []string
	AdminToken string
	DataDir    string
	// WorkDir holds the throwaway stack (default: a new directory under
	// /var/tmp); KeepStack leaves it running and in place.
	WorkDir   string
	KeepStack bool
	// Server holds the settings of the servers built here beyond their
	// connections, pools and cache prefix: the pool wait bound, the request
	// deadline, the database budget, the replica lag bound and wait, and
	// admission control. cmd/parley
	// fills it with `parley serve`'s defaults, so that the suite judges the
	// servers as they are deployed; its zero value is the app package's
	// defaults (admission control off).
	Server app.Config
	// Progress receives one line per scenario and phase; Logger the
	// servers' log (nil: discarded).
	Progress io.Writer
	Logger   *slog.Logger
}

func (c *Config) defaults() {
	if c.Clients <= 0 {
		c.Clients = 8
	}
	if c.Rate <= 0 {
		c.Rate = 25
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// env is where scenarios run: the stack and how to reach it.
type env struct {
	cfg        Config
	stack      *stack.Stack
	ownStack   bool
	dir        string
	adminToken string
	primaryURL string // direct, app role: the judge
	bouncerURL string // PgBouncer, app role: hogs and storms
	api        *api
	rolloutsOK bool
}

// Run runs cfg's scenarios and returns one result each (a scenario that
// could not run has Error set and Passed false). The error is for a run
// that could not start at all.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	cfg.defaults()
	var scs []*scenario
	for _, n := range cfg.Scenarios {
		sc := byName(n)
		if sc == nil {
			return nil, fmt.Errorf("unknown scenario %q (want one of %v or all)", n, Names())
		}
		scs = append(scs, sc)
	}
	e, err := newEnv(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer e.close()
	var out []Result
	for _, sc := range scs {
		if ctx.Err() != nil {
			break
		}
		res := e.runScenario(ctx, sc)
		out = append(out, res)
	}
	return out, ctx.Err()
}

func (e *env) progress(format string, args ...any) {
	fmt.Fprintf(e.cfg.Progress, time.Now().Format("15:04:05.000")+" "+format+"\n", args...)
}

func newEnv(ctx context.Context, cfg Config) (*env, error) {
	e := &env{cfg: cfg, api: newAPI(5 * time.Second), adminToken: cfg.AdminToken}
	if len(cfg.Targets) > 0 {
		if cfg.DataDir == "" {
			return nil, errors.New("--target needs --data-dir: the stack the servers run on, whose daemons the faults act on")
		}
		if cfg.AdminToken == "" {
			return nil, errors.New("--target needs --admin-token")
		}
		s, err := stack.Open(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		e.stack = s
	} else {
		dir := cfg.WorkDir
		if dir == "" {
			d, err := os.MkdirTemp("/var/tmp", "parley-chaos-")
			if err != nil {
				return nil, err
			}
			// The daemons' account must be able to enter it.
			if err := os.Chmod(d, 0o755); err != nil {
				return nil, err
			}
			dir = d
		}
		e.dir = dir
		e.progress("stack: bringing up a throwaway stack in %s (fsync on: a crash must not lose acknowledged writes)", dir)
		// Not Fast: with synchronous_commit off a restart -m immediate loses
		// the last acknowledged commits, which is what primary-restart checks.
		s, err := stack.Up(ctx, stack.Config{DataDir: dir, Fast: false, PoolSize: 20, Log: cfg.Progress})
		if err != nil {
			if s2, oerr := stack.Open(dir); oerr == nil && !cfg.KeepStack {
				_ = s2.Down(context.Background())
			}
			return nil, fmt.Errorf("stack: %w", err)
		}
		e.stack, e.ownStack = s, true
		if e.adminToken == "" {
			e.adminToken = "adm_chaos_" + strconv.FormatInt(time.Now().UnixNano(), 36)
		}
		pool, err := pgxpool.New(ctx, s.PrimaryURL())
		if err != nil {
			e.close()
			return nil, err
		}
		_, err = postgres.Migrate(ctx, pool, nil)
		pool.Close()
		if err != nil {
			e.close()
			return nil, fmt.Errorf("migrate: %w", err)
		}
	}
	e.primaryURL = e.stack.PrimaryURL()
	e.bouncerURL = e.stack.PgBouncerURL()
	if len(cfg.Targets) == 0 {
		sv := cfg.Server
		adm := "off"
		if sv.Admission.Enabled {
			adm = "on"
		}
		e.progress("servers: two per scenario, pools of 10, pool wait bound %v, request deadline %v, admission control %s (0: the package default)",
			sv.AcquireTimeout, sv.RequestTimeout, adm)
	}
	return e, nil
}

func (e *env) close() {
	e.api.close()
	if e.ownStack && !e.cfg.KeepStack {
		if err := e.stack.Down(context.Background()); err != nil {
			e.progress("stack down: %v", err)
		}
		if e.cfg.WorkDir == "" {
			_ = os.RemoveAll(e.dir)
		}
	}
}

// instance is one API server of a scenario.
type instance struct {
	base    string
	app     *app.App
	stop    context.CancelFunc
	done    chan struct{}
	replica *proxy // the instance's link to the replica, when proxied
	redis   *proxy // its link to Redis, when proxied
}

// startInstances builds two servers as `parley serve` does (app.New), with
// their replica or Redis links through proxies when sc needs them.
func (e *env) startInstances(ctx context.Context, sc *scenario) ([]*instance, error) {
	if len(e.cfg.Targets) > 0 {
		var out []*instance
		for _, t := range e.cfg.Targets {
			out = append(out, &instance{base: t})
		}
		return out, nil
	}
	var out []*instance
	fail := func(err error) ([]*instance, error) {
		stopInstances(out)
		return nil, err
	}
	for i := range 2 {
		in := &instance{done: make(chan struct{})}
		replicaURL := e.stack.ReplicaURL()
		if sc.replicaProxy {
			p, err := newProxy(fmt.Sprintf("%s-replica-%d", sc.name, i), net.JoinHostPort("127.0.0.1", strconv.Itoa(e.stack.State.ReplicaPort)))
			if err != nil {
				return fail(err)
			}
			in.replica = p
			u, _ := url.Parse(replicaURL)
			u.Host = p.addr()
			replicaURL = u.String()
		}
		redisURL := e.stack.RedisURL()
		if sc.redisProxy && i == 0 {
			p, err := newProxy(fmt.Sprintf("%s-redis-%d", sc.name, i), e.stack.RedisAddr())
			if err != nil {
				return fail(err)
			}
			in.redis = p
			redisURL = "redis://" + p.addr() + "/0"
		}
		out = append(out, in)
		log := e.cfg.Logger.With("instance", i, "scenario", sc.name)
		a, err := app.New(ctx, app.Config{
			PrimaryURL: e.bouncerURL, PrimaryExecMode: "exec",
			ReplicaURLs: []string{replicaURL}, ReplicaExecMode: "cache_statement",
			RedisURL: redisURL, CachePrefix: "chaos:",
			AdminToken:       e.adminToken,
			PrimaryPoolConns: 10, ReplicaPoolConns: 10,
			AcquireTimeout: e.cfg.Server.AcquireTimeout, RequestTimeout: e.cfg.Server.RequestTimeout,
			MaxReplicaLag: e.cfg.Server.MaxReplicaLag, ReplicaWait: e.cfg.Server.ReplicaWait,
			DBBudget: e.cfg.Server.DBBudget, Admission: e.cfg.Server.Admission,
			NoMonitors: true,
			Logger:     log, AccessLog: log, AccessLogSample: -1,
		})
		if err != nil {
			return fail(fmt.Errorf("instance %d: %w", i, err))
		}
		in.app = a
		a.Start()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fail(err)
		}
		in.base = "http://" + ln.Addr().String()
		sctx, stop := context.WithCancel(context.Background())
		in.stop = stop
		go func() {
			defer close(in.done)
			if err := a.Serve(sctx, ln); err != nil {
				log.Error("serve", "err", err)
			}
		}()
	}
	return out, nil
}

func stopInstances(ins []*instance) {
	for _, in := range ins {
		if in.stop != nil {
			in.stop()
			<-in.done
		}
		if in.app != nil {
			in.app.Close()
		}
		if in.replica != nil {
			in.replica.close()
		}
		if in.redis != nil {
			in.redis.close()
		}
	}
}

// ensureRollouts puts every read endpoint on the optimized path with the
// cache and replicas, and waits until every instance applies it.
func (e *env) ensureRollouts(ctx context.Context, bases []string) error {
	endpoints := []string{"message_history", "conversation_list", "unread_count"}
	if !e.rolloutsOK {
		for _, ep := range endpoints {
			r := e.api.do(ctx, "PUT", bases[0]+"/admin/rollouts/"+ep, e.adminToken, map[string]any{"percent": 100, "cache": true, "replica": true})
			if r.Status != 200 {
				return r.failure("set rollout " + ep)
			}
		}
		e.rolloutsOK = true
	}
	return waitFor(ctx, 10*time.Second, "every instance on the optimized path", func() bool {
		for _, b := range bases {
			st, err := e.status(ctx, b)
			if err != nil {
				return false
			}
			for _, ep := range endpoints {
				ro := st.Rollouts[ep]
				if ro.Percent != 100 || !ro.Cache || !ro.Replica {
					return false
				}
			}
		}
		return true
	})
}

func (e *env) status(ctx context.Context, base string) (statusJSON, error) {
	var st statusJSON
	r := e.api.do(ctx, "GET", base+"/admin/status", e.adminToken, nil)
	if r.Status != 200 {
		return st, r.failure("status")
	}
	return st, r.decode(&st)
}

// waitFor polls cond every 20 ms for up to d.
func waitFor(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", d, what)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// sample is one poll of an instance's /admin/status.
type sample struct {
	at      time.Time
	inst    int
	ok      bool
	breaker string // replica1's
	state   string
	cache   string
}

// monitor polls every instance's /admin/status every 50 ms.
type monitor struct {
	mu      sync.Mutex
	samples []sample
}

func (m *monitor) run(ctx context.Context, e *env, bases []string) {
	a := newAPI(time.Second)
	defer a.close()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		for i, b := range bases {
			wg.Go(func() {
				s := sample{at: time.Now(), inst: i}
				r := a.do(ctx, "GET", b+"/admin/status", e.adminToken, nil)
				var st statusJSON
				if r.Status == 200 && r.decode(&st) == nil {
					s.ok, s.cache = true, st.Cache.State
					if len(st.Replicas) > 0 {
						s.breaker, s.state = st.Replicas[0].Breaker, st.Replicas[0].State
					}
				}
				m.mu.Lock()
				m.samples = append(m.samples, s)
				m.mu.Unlock()
			})
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// firstEach is, for every instance, the first sample at or after from for
// which pred holds; ok is false unless every instance has one. It returns
// the latest of them: when the last instance got there.
func (m *monitor) firstEach(n int, from time.Time, pred func(sample) bool) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	first := make([]time.Time, n)
	for _, s := range m.samples {
		if s.ok && !s.at.Before(from) && first[s.inst].IsZero() && pred(s) {
			first[s.inst] = s.at
		}
	}
	var last time.Time
	for _, t := range first {
		if t.IsZero() {
			return time.Time{}, false
		}
		if t.After(last) {
			last = t
		}
	}
	return last, true
}

// scenarioRun is one scenario in progress.
type scenarioRun struct {
	e         *env
	sc        *scenario
	ins       []*instance
	bases     []string
	wl        *workload
	mon       *monitor
	faultDur  time.Duration
	faultAt   time.Time
	healAt    time.Time
	mu        sync.Mutex
	marks     map[string]time.Time
	notes     []string
	extra     map[string]any // what a scenario's fault measured
	faultDone chan struct{}
}

func (r *scenarioRun) mark(name string) {
	r.mu.Lock()
	r.marks[name] = time.Now()
	r.mu.Unlock()
	r.e.progress("  %s: %s", r.sc.name, name)
}

func (r *scenarioRun) markAt(name string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.marks[name]
	return t, ok
}

func (r *scenarioRun) note(format string, args ...any) {
	r.mu.Lock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// phases of a scenario.
func (e *env) durations() (before, after, drain time.Duration) {
	if e.cfg.Short {
		return 3 * time.Second, 5 * time.Second, 15 * time.Second
	}
	return 5 * time.Second, 8 * time.Second, 20 * time.Second
}

// runScenario runs one scenario from set-up to verdict.
func (e *env) runScenario(ctx context.Context, sc *scenario) (res Result) {
	res = Result{Name: sc.name, Short: e.cfg.Short, StartedAt: time.Now().UTC(), Phases: map[string]*PhaseStats{}, Marks: map[string]float64{}}
	res.LoadAvg[0] = loadAvg()
	defer func() { res.LoadAvg[1] = loadAvg() }()
	fail := func(err error) Result {
		res.Error = err.Error()
		res.Passed = false
		e.progress("%s: could not run: %v", sc.name, err)
		return res
	}
	if len(e.cfg.Targets) > 0 && (sc.replicaProxy || sc.redisProxy) {
		return fail(errors.New("needs a proxy inside the servers' connections: runs only on servers built by parley chaos (no --target)"))
	}
	e.progress("%s: %s", sc.name, sc.summary)
	ins, err := e.startInstances(ctx, sc)
	if err != nil {
		return fail(err)
	}
	defer stopInstances(ins)
	r := &scenarioRun{e: e, sc: sc, ins: ins, mon: &monitor{}, marks: map[string]time.Time{}, extra: map[string]any{}}
	for _, in := range ins {
		r.bases = append(r.bases, in.base)
	}
	r.faultDur = sc.full
	if e.cfg.Short {
		r.faultDur = sc.short
	}
	if err := e.ensureRollouts(ctx, r.bases); err != nil {
		return fail(err)
	}
	if err := waitFor(ctx, 30*time.Second, "the replica in rotation and the cache up on every instance", func() bool {
		for _, b := range r.bases {
			st, err := e.status(ctx, b)
			if err != nil || st.Cache.State != "up" || len(st.Replicas) == 0 || st.Replicas[0].Breaker != "closed" {
				return false
			}
		}
		return true
	}); err != nil {
		return fail(err)
	}
	id := runID(sc.name)
	w, err := setupWorld(ctx, e.api, r.bases[0], e.adminToken, "x"+strconv.FormatInt(time.Now().UnixMilli()%1e10, 36), e.cfg.Clients)
	if err != nil {
		return fail(fmt.Errorf("set-up: %w", err))
	}
	r.wl = &workload{api: newAPI(5 * time.Second), bases: r.bases, world: w, rec: &recorder{sends: map[string]*send{}},
		rate: e.cfg.Rate, runID: id, settle: time.Second}
	defer r.wl.api.close()

	before, after, drain := e.durations()
	mctx, stopMon := context.WithCancel(ctx)
	var monWG sync.WaitGroup
	monWG.Go(func() { r.mon.run(mctx, e, r.bases) })
	defer func() { stopMon(); monWG.Wait() }()

	wctx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	dctx, stopDrain := context.WithTimeout(context.Background(), before+r.faultDur+after+drain+2*time.Minute)
	defer stopDrain()
	var wlWG sync.WaitGroup
	wlWG.Go(func() { r.wl.run(wctx, dctx) })

	start := time.Now()
	e.progress("  %s: before (%v, %d clients × %.0f req/s)", sc.name, before, e.cfg.Clients, e.cfg.Rate)
	if err := sleep(ctx, before); err != nil {
		return fail(err)
	}
	r.faultAt = time.Now()
	e.progress("  %s: fault (%v)", sc.name, r.faultDur)
	faultErr := sc.fault(ctx, r)
	r.healAt = time.Now()
	e.progress("  %s: heal", sc.name)
	healErr := sc.heal(context.WithoutCancel(ctx), r)
	if faultErr != nil || healErr != nil {
		r.wl.draining.Store(true)
		stopWork()
		stopDrain()
		wlWG.Wait()
		return fail(errors.Join(faultErr, healErr))
	}
	e.progress("  %s: after (%v)", sc.name, after)
	if err := sleep(ctx, after); err != nil {
		return fail(err)
	}
	end := time.Now()
	r.wl.draining.Store(true)
	e.progress("  %s: finishing the clients' retries (≤ %v)", sc.name, drain)
	drainTimer := time.AfterFunc(drain, stopDrain)
	wlWG.Wait()
	drainTimer.Stop()
	stopWork()
	// The monitor sees the recovery through the drain.
	if sc.settle != nil {
		_ = waitFor(ctx, 15*time.Second, "recovery seen by the monitor", func() bool { return sc.settle(r) })
	}
	stopMon()
	monWG.Wait()

	// The verdict.
	rows, err := finalRows(ctx, e.primaryURL, append(soloIDs(w), w.groupID))
	if err != nil {
		return fail(err)
	}
	v := judge(w, r.wl.rec, rows)
	res.AttemptedWrites, res.AckedWrites, res.LostWrites, res.DuplicatedWrites = v.Attempted, v.Acked, v.Lost, v.Duplicated
	res.UnexpectedWrites, res.RecoveredWrites, res.InDoubtWrites, res.FailedWrites = v.Unexpected, v.Recovered, v.InDoubt, v.Failed
	res.OrderViolations, res.RYWChecks, res.RYWViolations = v.OrderViolations, v.RYWChecks, v.RYWViolations
	res.StaleReads, res.StaleBySource = v.StaleReads, v.StaleBySource
	res.AbortedSends, res.AbortedCommitted, res.AbortViolations = v.AbortedSends, v.AbortedCommitted, v.AbortViolations
	res.Examples = v.Examples
	res.Phases = phaseStats(r.wl.rec.ops, r.faultAt, r.healAt, end)
	res.Slowest = slowest(r.wl.rec.ops, r.faultAt, 5)
	for name, t := range r.marks {
		res.Marks[name] = round3(t.Sub(r.faultAt).Seconds())
	}
	res.Marks["heal"] = round3(r.healAt.Sub(r.faultAt).Seconds())
	res.Marks["start"] = round3(start.Sub(r.faultAt).Seconds())
	if len(r.bases) < 2 {
		r.note("one instance only: the read after a send could not go to another instance")
	}
	res.Targets = append(commonTargets(v), sc.targets(r, &res)...)
	res.Passed = true
	for _, t := range res.Targets {
		res.Passed = res.Passed && t.Passed
	}
	res.Notes = r.notes
	res.Notes = append(res.Notes, fmt.Sprintf("%d sends attempted, %d acknowledged, %d committed without an acknowledgement (recovered), %d in doubt at the end, %d failed for good; %d read-your-writes checks",
		v.Attempted, v.Acked, v.Recovered, v.InDoubt, v.Failed, v.RYWChecks))
	verdict := "passed"
	if !res.Passed {
		verdict = "FAILED"
	}
	e.progress("%s: %s (load average %.1f)", sc.name, verdict, loadAvg())
	for _, t := range res.Targets {
		mark := "ok  "
		if !t.Passed {
			mark = "MISS"
		}
		e.progress("  %s %s: want %s, measured %s", mark, t.Name, t.Want, t.Measured)
	}
	return res
}

func soloIDs(w *world) []string {
	var out []string
	for _, wr := range w.writers {
		out = append(out, wr.soloID)
	}
	return out
}

// commonTargets hold in every scenario: the set checker and the reads'
// consistency.
func commonTargets(v verdict) []Target {
	zero := func(name, want string, n int, extra string) Target {
		m := strconv.Itoa(n)
		if extra != "" {
			m += " " + extra
		}
		return Target{Name: name, Want: want, Measured: m, Passed: n == 0, Correctness: true}
	}
	stale := ""
	if len(v.StaleBySource) > 0 {
		var parts []string
		for s, n := range v.StaleBySource {
			parts = append(parts, fmt.Sprintf("%s: %d", s, n))
		}
		sort.Strings(parts)
		stale = fmt.Sprint(parts)
	}
	return []Target{
		zero("acknowledged writes lost", "0", v.Lost, fmt.Sprintf("of %d acknowledged", v.Acked)),
		zero("duplicated writes (a key with two rows, an acknowledgement naming another row)", "0", v.Duplicated, ""),
		zero("rows no client sent", "0", v.Unexpected, ""),
		zero("acknowledgement order broken (a send acknowledged before another began, stored after it)", "0", v.OrderViolations, ""),
		zero("read-your-writes violations (the writer's next read, on the other instance)", "0", v.RYWViolations, fmt.Sprintf("of %d checks", v.RYWChecks)),
		zero("stale reads from the cache or the primary (missing a message acknowledged before the read began)", "0", v.StaleReads, stale),
	}
}
