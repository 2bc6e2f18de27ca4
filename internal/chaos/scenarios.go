package chaos

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// scenario is one fault, how it is healed and what must hold.
type scenario struct {
	name, summary string
	// full and short are the fault phase's length (--short: make test).
	full, short time.Duration
	// The instance's replica link (both instances) or Redis link (the
	// first instance only) go through a proxy in this process.
	replicaProxy, redisProxy bool
	// fault injects the fault and returns at the end of the fault phase;
	// heal undoes what is left of it.
	fault, heal func(ctx context.Context, r *scenarioRun) error
	// settle, when set, says when the recovery the targets measure has been
	// seen (the monitor runs until then, up to 15 s after the clients stop).
	settle  func(r *scenarioRun) bool
	targets func(r *scenarioRun, res *Result) []Target
}

// Names lists the scenarios in the order `--scenario all` runs them.
func Names() []string {
	var out []string
	for _, sc := range scenarios {
		out = append(out, sc.name)
	}
	return out
}

func byName(name string) *scenario {
	for _, sc := range scenarios {
		if sc.name == name {
			return sc
		}
	}
	return nil
}

var scenarios = []*scenario{
	{
		name: "replica-lag", summary: "WAL replay paused on the replica, then resumed",
		full: 10 * time.Second, short: 5 * time.Second,
		fault: func(ctx context.Context, r *scenarioRun) error {
			if err := r.e.stack.SetReplayPaused(ctx, true); err != nil {
				return err
			}
			r.mark("replay paused")
			return sleep(ctx, r.faultDur)
		},
		heal: func(ctx context.Context, r *scenarioRun) error {
			err := r.e.stack.SetReplayPaused(ctx, false)
			r.mark("replay resumed")
			return err
		},
		settle: func(r *scenarioRun) bool { _, ok := r.breakerClosedAfterHeal(); return ok },
		targets: func(r *scenarioRun, res *Result) []Target {
			open, okOpen := r.mon.firstEach(len(r.bases), r.faultAt, func(s sample) bool { return s.breaker != "closed" })
			closed, okClosed := r.breakerClosedAfterHeal()
			r.detectRecover(res, open, okOpen, closed, okClosed)
			return []Target{
				failedRequests(res, 0),
				within("breaker open after the pause (every instance)", 2*time.Second, open, r.faultAt, okOpen),
				within("replica back in rotation after the resume (every instance)", 5*time.Second, closed, r.healAt, okClosed),
			}
		},
	},
	{
		name: "cache-failure", summary: "Redis stopped, started again, then hung (SIGSTOP)",
		full: 10 * time.Second, short: 6 * time.Second,
		fault: func(ctx context.Context, r *scenarioRun) error {
			if err := r.e.stack.StopComponent(ctx, "redis"); err != nil {
				return err
			}
			r.mark("redis stopped")
			if err := sleep(ctx, r.faultDur/2); err != nil {
				return err
			}
			if err := r.e.stack.StartComponent(ctx, "redis"); err != nil {
				return err
			}
			r.mark("redis started")
			if err := r.e.stack.SignalComponent("redis", syscall.SIGSTOP); err != nil {
				return err
			}
			r.mark("redis hung")
			return sleep(ctx, r.faultDur/2)
		},
		heal: func(ctx context.Context, r *scenarioRun) error {
			err := r.e.stack.SignalComponent("redis", syscall.SIGCONT)
			r.mark("redis resumed")
			return err
		},
		settle: func(r *scenarioRun) bool { _, ok := r.cacheUpAfterHeal(); return ok },
		targets: func(r *scenarioRun, res *Result) []Target {
			down, okDown := r.mon.firstEach(len(r.bases), r.faultAt, func(s sample) bool { return s.cache != "up" })
			up, okUp := r.cacheUpAfterHeal()
			r.detectRecover(res, down, okDown, up, okUp)
			b, f := res.Phases["before"], res.Phases["fault"]
			added := f.P95ms - b.P95ms
			cacheAfter := res.Phases["after"].Sources["cache"]
			inval := Target{Name: "invalidations made during the outage take effect before any cached value is served again",
				Want: "0 stale reads from the cache", Measured: fmt.Sprintf("%d stale of %d reads from the cache after the outage", res.StaleBySource["cache"], cacheAfter),
				Passed: res.StaleBySource["cache"] == 0 && cacheAfter > 0, Correctness: cacheAfter > 0}
			if cacheAfter == 0 {
				inval.Note = "not judged: no read was served by the cache after the outage"
			}
			return []Target{
				failedRequests(res, 0),
				{Name: "p95 added by the outage", Want: "≤ 5 ms (fault phase p95 − before phase p95, all requests)",
					Measured: fmt.Sprintf("%+.2f ms (%.2f → %.2f ms; reads %.1f → %.1f, sends %.1f → %.1f)", added, b.P95ms, f.P95ms, b.ReadP95, f.ReadP95, b.SendP95, f.SendP95),
					Passed:   added <= 5},
				inval,
			}
		},
	},
	{
		name: "pool-exhaustion", summary: "2× PgBouncer's pool size of long transactions hold its server connections",
		full: 8 * time.Second, short: 4 * time.Second,
		fault: func(ctx context.Context, r *scenarioRun) error {
			n := 2 * r.e.stack.State.PoolSize
			hctx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			var held, dropped int64
			var mu sync.Mutex
			for range n {
				wg.Go(func() {
					h, d := hog(hctx, r.e.bouncerURL)
					mu.Lock()
					held, dropped = held+h, dropped+d
					mu.Unlock()
				})
			}
			var maxWait time.Duration
			var pw sync.WaitGroup
			pw.Go(func() { maxWait = pgbouncerMaxWait(hctx, r.e.stack.PgBouncerAdminURL()) })
			r.mark(fmt.Sprintf("%d long transactions started", n))
			err := sleep(ctx, r.faultDur)
			stop()
			// The heal, as the runbook's: end the long transactions on the
			// primary. Their clients' own cancel requests cannot: PgBouncer
			// 1.18 forwards a cancel over a server connection of the pool the
			// hogs hold, so it waits behind them.
			ended, terr := endHogs(context.WithoutCancel(ctx), r.e.primaryURL)
			wg.Wait()
			pw.Wait()
			r.mark(fmt.Sprintf("long transactions ended (%d backends terminated)", ended))
			err = errors.Join(err, terr)
			r.extra["hogs"] = n
			r.extra["max_wait"] = maxWait
			r.note("%d long transactions through PgBouncer (pool size %d); they held a server connection %d times and were dropped by PgBouncer %d times (query_wait_timeout)", n, r.e.stack.State.PoolSize, held, dropped)
			return err
		},
		heal: func(context.Context, *scenarioRun) error { return nil },
		targets: func(r *scenarioRun, res *Result) []Target {
			f := res.Phases["fault"]
			r.detectFirstFailure(res)
			r.recoverLastFailure(res, r.healAt, false)
			unanswered := 0
			for c, n := range f.ByClass {
				if c != "unavailable" {
					unanswered += n
				}
			}
			for c, n := range res.Phases["after"].ByClass {
				if c != "unavailable" {
					unanswered += n
				}
			}
			maxWait, _ := r.extra["max_wait"].(time.Duration)
			success := 100 * float64(f.Requests-f.Errors) / math.Max(1, float64(f.Requests))
			return []Target{
				{Name: "every request answered: served, or 503 + Retry-After", Want: "0 other outcomes (timeouts, resets, 5xx without Retry-After)",
					Measured: fmt.Sprintf("%d other of %d (fault: %v)", unanswered, f.Requests, f.ByClass), Passed: unanswered == 0},
				{Name: "success during the fault", Want: "≥ 95 %", Measured: fmt.Sprintf("%.1f %% of %d", success, f.Requests), Passed: success >= 95},
				{Name: "max queue wait", Want: "≤ 2 s (PgBouncer's maxwait and the slowest request of the fault phase)",
					Measured: fmt.Sprintf("PgBouncer %.2f s, slowest request %.0f ms", maxWait.Seconds(), f.MaxMs),
					Passed:   maxWait <= 2*time.Second && f.MaxMs <= 2000},
			}
		},
	},
	{
		name: "partition", summary: "each instance's replica link black-holed by a proxy, then slowed by 200 ms",
		full: 10 * time.Second, short: 6 * time.Second, replicaProxy: true,
		fault: func(ctx context.Context, r *scenarioRun) error {
			for _, in := range r.ins {
				if err := in.replica.blackHole(); err != nil {
					return err
				}
			}
			r.mark("replica link black-holed")
			if err := sleep(ctx, r.faultDur/2); err != nil {
				return err
			}
			for _, in := range r.ins {
				in.replica.heal(ctx)
				if err := in.replica.latency(200); err != nil {
					return err
				}
			}
			r.mark("replica link slowed by 200 ms")
			return sleep(ctx, r.faultDur/2)
		},
		heal: func(ctx context.Context, r *scenarioRun) error {
			for _, in := range r.ins {
				in.replica.heal(ctx)
			}
			r.mark("replica link healed")
			return nil
		},
		settle: func(r *scenarioRun) bool { _, ok := r.breakerClosedAfterHeal(); return ok },
		targets: func(r *scenarioRun, res *Result) []Target {
			open, okOpen := r.mon.firstEach(len(r.bases), r.faultAt, func(s sample) bool { return s.breaker != "closed" })
			closed, okClosed := r.breakerClosedAfterHeal()
			r.detectRecover(res, open, okOpen, closed, okClosed)
			slowed, _ := r.markAt("replica link slowed by 200 ms")
			var hole, onPrimary []float64
			for _, o := range r.wl.rec.ops {
				if o.Kind != "send" && o.Kind != "ping" && !o.Start.Before(r.faultAt) && o.Start.Before(slowed) {
					ms := float64(o.End.Sub(o.Start).Microseconds()) / 1000
					hole = append(hole, ms)
					if o.Source == "primary" {
						onPrimary = append(onPrimary, ms)
					}
				}
			}
			worst := pct(hole, 100)
			// The slowest read waited on the dead link, then ran on the
			// primary: the rest of its work is what a read on the primary
			// took in the same window (their p95; most of them never tried
			// the replica, its breaker being open), not what a replica read
			// took before the fault (the primary then serves every read).
			base := res.Phases["before"].ReadP95
			baseName := "before-phase read p95"
			if len(onPrimary) >= 20 {
				base, baseName = pct(onPrimary, 95), "p95 of the reads the primary served during the black hole"
			}
			const probeTimeoutMs = 400
			return []Target{
				failedRequests(res, 0),
				within("breaker open after the black hole (every instance)", time.Second, open, r.faultAt, okOpen),
				{Name: "no request waits on the dead link longer than the prober timeout",
					Want:     fmt.Sprintf("slowest read during the black hole − the rest of its work ≤ %d ms", probeTimeoutMs),
					Measured: fmt.Sprintf("%.0f ms − %.1f ms (%s) = %.0f ms (%d reads, %d on the primary)", worst, base, baseName, worst-base, len(hole), len(onPrimary)),
					Passed:   len(hole) > 0 && worst-base <= probeTimeoutMs,
					Note:     "the client sees the whole request: the rest of its work, on the primary, is bounded by the p95 of the reads the primary served in the same window (the before phase's read p95 when it served fewer than 20)"},
			}
		},
	},
	{
		name: "slow-query-storm", summary: "10 CPU-heavy queries at a time on the primary, as the app's role through PgBouncer",
		full: 8 * time.Second, short: 4 * time.Second,
		fault: func(ctx context.Context, r *scenarioRun) error {
			sctx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var ends []stormEnd
			for range 10 {
				wg.Go(func() {
					e := storm(sctx, r.e.bouncerURL)
					mu.Lock()
					ends = append(ends, e...)
					mu.Unlock()
				})
			}
			r.mark("storm started")
			err := sleep(ctx, r.faultDur)
			stop()
			wg.Wait()
			r.extra["storm"] = ends
			return err
		},
		heal: func(context.Context, *scenarioRun) error { return nil },
		targets: func(r *scenarioRun, res *Result) []Target {
			all, _ := r.extra["storm"].([]stormEnd)
			timeout := statementTimeout(r.e.bouncerURL)
			byTimeout, longest := 0, time.Duration(0)
			var first time.Time
			codes := map[string]int{}
			// A query PgBouncer dropped from its queue (08P01,
			// query_wait_timeout) never ran: it cannot run on. The target is
			// about the ones that ran.
			var ends []stormEnd
			queued := 0
			for _, e := range all {
				codes[e.code]++
				if e.code == "08P01" {
					queued++
					continue
				}
				ends = append(ends, e)
			}
			for _, e := range ends {
				if e.code == "57014" && !e.byClient {
					byTimeout++
					if first.IsZero() || e.at.Before(first) {
						first = e.at
					}
				}
				longest = max(longest, e.took)
			}
			if !first.IsZero() {
				res.DetectS = secs(first.Sub(r.faultAt))
			}
			r.recoverLastFailure(res, r.healAt, false)
			b, f := res.Phases["before"], res.Phases["fault"]
			var took []float64
			for _, e := range ends {
				took = append(took, float64(e.took.Milliseconds()))
			}
			endOK := len(ends) > 0 && timeout > 0 && byTimeout == len(ends)
			return []Target{
				latencyTarget("the API's reads and sends during the storm", 20, b, f, res.LoadAvg[0]),
				{Name: "the storm's queries end at their statement_timeout", Want: "every one that ran ends with 57014 (the role's statement_timeout), none runs on",
					Measured: fmt.Sprintf("%d of %d ended by statement_timeout (%v), %d more dropped by PgBouncer while queued (never ran); as the client saw them (PgBouncer's queue and CPU waits included) median %.0f ms, longest %v; SQLSTATEs %v",
						byTimeout, len(ends), timeout, queued, pct(took, 50), longest.Round(time.Millisecond), codes),
					Passed: endOK},
			}
		},
	},
	{
		name: "primary-restart", summary: "pg_ctl restart -m immediate on the primary",
		full: 0, short: 0,
		fault: func(ctx context.Context, r *scenarioRun) error {
			down, up := watchAccepting(ctx, r.e.primaryURL)
			r.mark("pg_ctl restart -m immediate")
			err := r.e.stack.RestartPrimary(ctx, "immediate")
			r.mark("pg_ctl returned")
			if t, ok := waitTime(down, 5*time.Second); ok {
				r.markTime("primary refusing", t)
			}
			if t, ok := waitTime(up, 10*time.Second); ok {
				r.markTime("primary accepting", t)
			}
			return err
		},
		heal: func(context.Context, *scenarioRun) error { return nil },
		targets: func(r *scenarioRun, res *Result) []Target {
			return r.restartTargets(res, "primary accepting", "PostgreSQL", "")
		},
	},
	{
		name: "pgbouncer-restart", summary: "PgBouncer killed (SIGKILL) and started again, then hung (SIGSTOP) for a while",
		full: 5 * time.Second, short: 3 * time.Second,
		fault: func(ctx context.Context, r *scenarioRun) error {
			if err := r.e.stack.KillComponent("pgbouncer"); err != nil {
				return err
			}
			r.mark("pgbouncer killed")
			if err := sleep(ctx, time.Second); err != nil {
				return err
			}
			if err := r.e.stack.StartComponent(ctx, "pgbouncer"); err != nil {
				return err
			}
			r.mark("pgbouncer accepting")
			if err := sleep(ctx, r.faultDur*3/5); err != nil {
				return err
			}
			if err := r.e.stack.SignalComponent("pgbouncer", syscall.SIGSTOP); err != nil {
				return err
			}
			r.mark("pgbouncer hung")
			return sleep(ctx, r.faultDur)
		},
		heal: func(ctx context.Context, r *scenarioRun) error {
			err := r.e.stack.SignalComponent("pgbouncer", syscall.SIGCONT)
			r.mark("pgbouncer resumed")
			if err != nil { // the fault stopped half-way: PgBouncer must run again
				err = errors.Join(err, r.e.stack.StartComponent(ctx, "pgbouncer"))
			}
			return err
		},
		targets: func(r *scenarioRun, res *Result) []Target {
			ts := r.restartTargets(res, "pgbouncer accepting", "PgBouncer", "pgbouncer hung")
			hung, _ := r.markAt("pgbouncer hung")
			resumed, _ := r.markAt("pgbouncer resumed")
			// After SIGCONT too: sends succeed again within 2 s.
			t2 := r.sendsBackAfter(resumed, time.Time{})
			res.RecoverS = secs(max(t2, time.Duration(*res.RecoverS*float64(time.Second))))
			ts = append(ts, Target{Name: "sends succeed again after PgBouncer resumes (SIGCONT)", Want: "≤ 2 s",
				Measured: fmt.Sprintf("%.2f s", t2.Seconds()), Passed: t2 <= 2*time.Second})
			// Reads the cache can serve keep being served while PgBouncer is
			// down or hung: cache hits in every second of both windows.
			killed, _ := r.markAt("pgbouncer killed")
			accepting, _ := r.markAt("pgbouncer accepting")
			gaps := 0
			var hits, reads, readErrs int
			for _, w := range [][2]time.Time{{killed, accepting}, {hung, resumed}} {
				for s := w[0]; s.Add(time.Second).Before(w[1].Add(time.Millisecond)); s = s.Add(time.Second) {
					n := 0
					for _, o := range r.wl.rec.ops {
						if o.Kind != "send" && o.Kind != "ping" && !o.Start.Before(s) && o.Start.Before(s.Add(time.Second)) {
							reads++
							if o.Class == "ok" && o.Source == "cache" {
								n++
							}
							if o.Class != "ok" {
								readErrs++
							}
						}
					}
					hits += n
					if n == 0 {
						gaps++
					}
				}
			}
			ts = append(ts, Target{Name: "reads the cache can serve keep being served while PgBouncer is down or hung",
				Want: "cache hits in every second of both windows", Measured: fmt.Sprintf("%d seconds without one; %d cache hits, %d of %d reads failed (those needing the primary)", gaps, hits, readErrs, reads),
				Passed: gaps == 0 && hits > 0})
			return ts
		},
	},
	{
		name: "redis-partial", summary: "the first instance's Redis link dropped (black hole), then slowed past the Redis timeout; the other instance keeps Redis",
		full: 10 * time.Second, short: 6 * time.Second, redisProxy: true,
		fault: func(ctx context.Context, r *scenarioRun) error {
			p := r.ins[0].redis
			if err := p.blackHole(); err != nil {
				return err
			}
			r.mark("instance 0's Redis link black-holed")
			if err := sleep(ctx, r.faultDur/2); err != nil {
				return err
			}
			p.heal(ctx)
			if err := p.latency(150); err != nil {
				return err
			}
			r.mark("instance 0's Redis link slowed by 150 ms")
			return sleep(ctx, r.faultDur/2)
		},
		heal: func(ctx context.Context, r *scenarioRun) error {
			r.ins[0].redis.heal(ctx)
			r.mark("instance 0's Redis link healed")
			return nil
		},
		targets: func(r *scenarioRun, res *Result) []Target {
			down, okDown := r.firstOn(0, r.faultAt, func(s sample) bool { return s.cache != "up" })
			up, okUp := r.firstOn(0, r.healAt, func(s sample) bool { return s.cache == "up" })
			r.detectRecover(res, down, okDown, up, okUp)
			f := res.Phases["fault"]
			r.note("fault phase: %d requests, %d errors %v (an instance that cannot deliver a send's invalidation answers 503: the client retries the key)", f.Requests, f.Errors, f.ByClass)
			return []Target{
				{Name: "read-your-writes on the other instance", Want: "0 violations", Measured: fmt.Sprintf("%d of %d checks", res.RYWViolations, res.RYWChecks), Passed: res.RYWViolations == 0 && res.RYWChecks > 0, Correctness: res.RYWChecks > 0},
				{Name: "no stale cached page served", Want: "0 stale reads from the cache", Measured: fmt.Sprintf("%d of %d cache reads", res.StaleBySource["cache"], sumSource(res, "cache")), Passed: res.StaleBySource["cache"] == 0, Correctness: true},
			}
		},
	},
	{
		name: "client-abort", summary: "clients hang up in the middle of half their sends",
		full: 8 * time.Second, short: 5 * time.Second,
		fault: func(ctx context.Context, r *scenarioRun) error {
			r.wl.abortTo.Store(time.Now().Add(r.faultDur).UnixNano())
			r.wl.abortFrom.Store(time.Now().UnixNano())
			r.mark("clients hang up mid-send")
			return sleep(ctx, r.faultDur)
		},
		heal: func(context.Context, *scenarioRun) error { return nil },
		targets: func(r *scenarioRun, res *Result) []Target {
			t := Target{Name: "every committed send is invalidated and visible to its writer's next read on every instance",
				Want: "0 reads missing it", Measured: fmt.Sprintf("%d of %d reads (%d sends hung up on, %d of them committed)", res.AbortViolations, countAbortChecks(r, res), res.AbortedSends, res.AbortedCommitted),
				Passed: res.AbortViolations == 0 && res.AbortedCommitted > 0, Correctness: res.AbortedCommitted > 0}
			if res.AbortedCommitted == 0 {
				t.Note = "not judged: no send hung up on committed"
			}
			return []Target{t}
		},
	},
}

// latencyTarget: the fault phase's p95 under bound ms. On a machine shared
// with other work the absolute figure also measures the neighbours: when
// the before phase's own p95 is already over the bound (the machine's load,
// not the fault), the check is made relative — the p95 the fault added —
// and says so.
func latencyTarget(name string, bound float64, b, f *PhaseStats, load float64) Target {
	t := Target{Name: name, Want: fmt.Sprintf("p95 < %.0f ms", bound)}
	detail := fmt.Sprintf("sends %.1f, reads %.1f; before phase p95 %.1f ms", f.SendP95, f.ReadP95, b.P95ms)
	if b.P95ms < bound {
		t.Measured = fmt.Sprintf("p95 %.1f ms (%s)", f.P95ms, detail)
		t.Passed = f.P95ms < bound
		return t
	}
	added := f.P95ms - b.P95ms
	t.Want = fmt.Sprintf("p95 added < %.0f ms (relative: the before phase's p95 was already over %.0f ms at load average %.1f)", bound, bound, load)
	t.Measured = fmt.Sprintf("%+.1f ms: p95 %.1f ms (%s)", added, f.P95ms, detail)
	t.Passed = added < bound
	return t
}

// failedRequests: at most n requests failed, in every phase.
func failedRequests(res *Result, n int) Target {
	total, failed := 0, 0
	classes := map[string]int{}
	for _, p := range res.Phases {
		total += p.Requests
		failed += p.Errors
		for c, k := range p.ByClass {
			classes[c] += k
		}
	}
	m := fmt.Sprintf("%d of %d", failed, total)
	if failed > 0 {
		m += fmt.Sprintf(" %v", classes)
	}
	return Target{Name: "failed requests", Want: fmt.Sprintf("%d (100 %% success)", n), Measured: m, Passed: failed <= n}
}

// within: the event at t came no later than bound after from.
func within(name string, bound time.Duration, t, from time.Time, ok bool) Target {
	tg := Target{Name: name, Want: "≤ " + bound.String()}
	if !ok {
		tg.Measured = "not seen"
		return tg
	}
	d := t.Sub(from)
	tg.Measured = fmt.Sprintf("%.2f s", d.Seconds())
	tg.Passed = d <= bound
	return tg
}

func sumSource(res *Result, src string) int {
	n := 0
	for _, p := range res.Phases {
		n += p.Sources[src]
	}
	return n
}

func countAbortChecks(r *scenarioRun, res *Result) int {
	n := 0
	for _, o := range r.wl.rec.ops {
		if o.AbortCheck != "" && o.Class == "ok" {
			n++
		}
	}
	_ = res
	return n
}

func (r *scenarioRun) markTime(name string, t time.Time) {
	r.mu.Lock()
	r.marks[name] = t
	r.mu.Unlock()
	r.e.progress("  %s: %s (%.2f s after the fault began)", r.sc.name, name, t.Sub(r.faultAt).Seconds())
}

func (r *scenarioRun) breakerClosedAfterHeal() (time.Time, bool) {
	return r.mon.firstEach(len(r.bases), r.healAt, func(s sample) bool { return s.breaker == "closed" })
}

func (r *scenarioRun) cacheUpAfterHeal() (time.Time, bool) {
	return r.mon.firstEach(len(r.bases), r.healAt, func(s sample) bool { return s.cache == "up" })
}

// firstOn is the first sample of instance inst at or after from where pred
// holds.
func (r *scenarioRun) firstOn(inst int, from time.Time, pred func(sample) bool) (time.Time, bool) {
	r.mon.mu.Lock()
	defer r.mon.mu.Unlock()
	for _, s := range r.mon.samples {
		if s.inst == inst && s.ok && !s.at.Before(from) && pred(s) {
			return s.at, true
		}
	}
	return time.Time{}, false
}

// detectFirstFailure: detect_s is when the first request that began after
// the fault failed (the answer a client got first).
func (r *scenarioRun) detectFirstFailure(res *Result) {
	var first time.Time
	for _, o := range r.wl.rec.ops {
		if o.Class != "ok" && o.Class != "aborted" && !o.Start.Before(r.faultAt) && (first.IsZero() || o.End.Before(first)) {
			first = o.End
		}
	}
	if !first.IsZero() {
		res.DetectS = secs(first.Sub(r.faultAt))
	}
}

// recoverLastFailure: recover_s is how long after from the last failed
// request (or send, with sendsOnly) ended: from then on everything
// succeeded. 0 when nothing failed after from.
func (r *scenarioRun) recoverLastFailure(res *Result, from time.Time, sendsOnly bool) time.Duration {
	var last time.Time
	for _, o := range r.wl.rec.ops {
		if sendsOnly && o.Kind != "send" && o.Kind != "ping" {
			continue
		}
		if o.Class != "ok" && o.Class != "aborted" && o.End.After(from) && o.End.After(last) {
			last = o.End
		}
	}
	d := time.Duration(0)
	if !last.IsZero() {
		d = last.Sub(from)
	}
	res.RecoverS = secs(d)
	return d
}

// sendsBackAfter is how long after t the last failed send attempt that
// ended before until (zero: no end) ended.
func (r *scenarioRun) sendsBackAfter(t, until time.Time) time.Duration {
	var last time.Time
	for _, o := range r.wl.rec.ops {
		if !until.IsZero() && !o.End.Before(until) {
			continue
		}
		if (o.Kind == "send" || o.Kind == "ping") && o.Class != "ok" && o.Class != "aborted" && o.End.After(t) && o.End.After(last) {
			last = o.End
		}
	}
	if last.IsZero() {
		return 0
	}
	return last.Sub(t)
}

// restartTargets are primary-restart's and pgbouncer-restart's: nothing
// acknowledged lost (common), sends back within 2 s of the component
// accepting connections, no request longer than 2 s, failures fast 503s.
func (r *scenarioRun) restartTargets(res *Result, acceptMark, what, untilMark string) []Target {
	r.detectFirstFailure(res)
	accept, ok := r.markAt(acceptMark)
	until, _ := r.markAt(untilMark) // the next fault, if any
	back := Target{Name: "sends succeed again after " + what + " accepts connections", Want: "≤ 2 s"}
	if ok {
		d := r.sendsBackAfter(accept, until)
		res.RecoverS = secs(d)
		back.Measured, back.Passed = fmt.Sprintf("%.2f s (last failed send ended then)", d.Seconds()), d <= 2*time.Second
	} else {
		back.Measured = "never seen accepting"
	}
	var slowest time.Duration
	other := map[string]int{}
	nOther := 0
	for _, o := range r.wl.rec.ops {
		if o.Start.Before(r.faultAt) || o.Drain || o.Class == "aborted" {
			continue
		}
		slowest = max(slowest, o.End.Sub(o.Start))
		if o.Class != "ok" && o.Class != "unavailable" {
			other[o.Class]++
			nOther++
		}
	}
	f := res.Phases["fault"]
	a := res.Phases["after"]
	return []Target{
		back,
		{Name: "no request hangs", Want: "every request answered within 2 s", Measured: fmt.Sprintf("slowest %v", slowest.Round(time.Millisecond)), Passed: slowest <= 2*time.Second},
		{Name: "failures fail fast with 503 + Retry-After", Want: "no other failure",
			Measured: fmt.Sprintf("%d other %v; fault phase %d errors of %d, after phase %d of %d", nOther, other, f.Errors, f.Requests, a.Errors, a.Requests),
			Passed:   nOther == 0},
	}
}

// watchAccepting polls url with fresh connections every 20 ms: down gets
// the first refusal, up the first success after it.
func watchAccepting(ctx context.Context, url string) (down, up <-chan time.Time) {
	d, u := make(chan time.Time, 1), make(chan time.Time, 1)
	go func() {
		refused := false
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			c, err := pgx.Connect(cctx, url)
			if err == nil {
				err = c.Ping(cctx)
				c.Close(context.Background())
			}
			cancel()
			now := time.Now()
			switch {
			case err != nil && !refused:
				refused = true
				d <- now
			case err == nil && refused:
				u <- now
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return d, u
}

func waitTime(c <-chan time.Time, d time.Duration) (time.Time, bool) {
	select {
	case t := <-c:
		return t, true
	case <-time.After(d):
		return time.Time{}, false
	}
}

// hog holds a PgBouncer server connection in one long transaction after
// another until ctx ends; it counts the transactions that got a connection
// and those PgBouncer dropped while they queued.
func hog(ctx context.Context, url string) (held, dropped int64) {
	for ctx.Err() == nil {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			return
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			_ = sleep(ctx, 100*time.Millisecond)
			continue
		}
		for ctx.Err() == nil {
			tx, err := conn.Begin(ctx)
			if err == nil {
				// The role's statement_timeout would end it: a long job sets
				// its own, in its transaction.
				_, err = tx.Exec(ctx, `SET LOCAL statement_timeout = 0`)
			}
			if err == nil {
				held++
				_, err = tx.Exec(ctx, hogSQL)
			}
			if tx != nil {
				_ = tx.Rollback(context.Background())
			}
			if err != nil {
				if ctx.Err() == nil {
					dropped++
				}
				break
			}
		}
		conn.Close(context.Background())
	}
	return held, dropped
}

// hogSQL is a hog's long statement; the comment marks its backends.
const hogSQL = `SELECT pg_sleep(30) /* parley chaos hog */`

// endHogs terminates, on the primary directly, every backend running
// hogSQL, and returns how many it terminated.
func endHogs(ctx context.Context, primaryURL string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, primaryURL)
	if err != nil {
		return 0, fmt.Errorf("end the long transactions: %w", err)
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
		FROM pg_stat_activity WHERE query = $1 AND pid <> pg_backend_pid()`, hogSQL).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("end the long transactions: %w", err)
	}
	return n, nil
}

// pgbouncerMaxWait polls SHOW POOLS every 100 ms until ctx ends and returns
// the longest wait of a queued client it saw (maxwait of the parley pool).
func pgbouncerMaxWait(ctx context.Context, adminURL string) time.Duration {
	cfg, err := pgx.ParseConfig(adminURL)
	if err != nil {
		return 0
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	var worst time.Duration
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if conn == nil {
			if conn, err = pgx.ConnectConfig(ctx, cfg); err != nil {
				conn = nil
				_ = sleep(ctx, 100*time.Millisecond)
				continue
			}
		}
		rows, err := conn.Query(ctx, "SHOW POOLS")
		if err != nil {
			conn.Close(context.Background())
			conn = nil
			continue
		}
		fields := rows.FieldDescriptions()
		for rows.Next() {
			vals := rows.RawValues()
			var db string
			var w, wus int64
			for i, f := range fields {
				switch f.Name {
				case "database":
					db = string(vals[i])
				case "maxwait":
					w, _ = strconv.ParseInt(string(vals[i]), 10, 64)
				case "maxwait_us":
					wus, _ = strconv.ParseInt(string(vals[i]), 10, 64)
				}
			}
			if db == "parley" {
				worst = max(worst, time.Duration(w)*time.Second+time.Duration(wus)*time.Microsecond)
			}
		}
		rows.Close()
		_ = sleep(ctx, 100*time.Millisecond)
	}
	return worst
}

// stormEnd is how one storm query ended.
type stormEnd struct {
	at       time.Time
	took     time.Duration
	code     string // SQLSTATE, or "client" when the storm's end cut it
	byClient bool
}

// storm runs CPU-heavy queries as the app's role through PgBouncer, one
// after the other, until ctx ends.
func storm(ctx context.Context, url string) []stormEnd {
	var out []stormEnd
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	for ctx.Err() == nil {
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			_ = sleep(ctx, 100*time.Millisecond)
			continue
		}
		for ctx.Err() == nil && !conn.IsClosed() {
			start := time.Now()
			// A set-returning function in the select list: one row at a
			// time, pure CPU, interruptible.
			var n int64
			err := conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT generate_series(1, 2000000000)) s`).Scan(&n)
			e := stormEnd{at: time.Now(), took: time.Since(start)}
			var pe *pgconn.PgError
			switch {
			case ctx.Err() != nil:
				e.code, e.byClient = "client", true
			case errors.As(err, &pe):
				e.code = pe.Code
			case err != nil:
				e.code = "error"
			default:
				e.code = "completed"
			}
			if !e.byClient {
				out = append(out, e)
			}
			if err != nil && (!errors.As(err, &pe) || pe.Severity == "FATAL" || pe.Code == "08P01") {
				break // the connection is gone (PgBouncer closes a client it drops): a new one
			}
		}
		conn.Close(context.Background())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// statementTimeout is the app role's statement_timeout as a fresh session
// through PgBouncer sees it (0: none).
func statementTimeout(url string) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return 0
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0
	}
	defer conn.Close(context.Background())
	var ms int64
	if err := conn.QueryRow(ctx, `SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout'`).Scan(&ms); err != nil {
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

// detectRecover records the scenario's time to detect (from the fault to
// detected) and to recover (from the heal to recovered), each when it was
// seen.
func (r *scenarioRun) detectRecover(res *Result, detected time.Time, okDetected bool, recovered time.Time, okRecovered bool) {
	if okDetected {
		res.DetectS = secs(detected.Sub(r.faultAt))
	}
	if okRecovered {
		res.RecoverS = secs(recovered.Sub(r.healAt))
	}
}
