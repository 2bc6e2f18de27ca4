package canary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/chat"
)

// Options are the controller's connections and outputs.
type Options struct {
	// Prometheus is the Prometheus HTTP API's base URL.
	Prometheus string
	// Scrape is that Prometheus's scrape interval (default 15s): windows
	// shorter than 4 scrapes are refused.
	Scrape time.Duration
	// Target is a Parley instance's base URL (http://host:port) and
	// AdminToken its admin bearer token: rollouts change through its API.
	Target     string
	AdminToken string
	// DryRun judges and reports, stores the run as a dry run, and changes
	// no rollout (it takes no lease).
	DryRun bool
	// Owner names this controller in the lease and the run (default
	// host:pid).
	Owner string
	// Out receives one progress line per check (nil: none).
	Out io.Writer
	// Logger receives every decision (nil: slog.Default()).
	Logger *slog.Logger
	// Registerer receives the controller's metrics (nil: not exported).
	Registerer prometheus.Registerer
}

// Outcome is how a run ended.
type Outcome string

// Outcomes.
const (
	Promoted   Outcome = "promoted"
	RolledBack Outcome = "rolled_back"
)

// Result is the end of a run.
type Result struct {
	Outcome Outcome
	RunID   int64
	Trigger string
	Reason  string
	// Blind: rolled back because the judge could not query Prometheus
	// (ErrorLimit errors in a row), not on a verdict.
	Blind bool
}

// ErrInterrupted: the context ended; the run is left as it was, and a
// controller started again resumes it.
var ErrInterrupted = errors.New("interrupted; 'parley canary run' with the same configuration resumes the run")

// controller drives one run.
type controller struct {
	cfg     *Config
	opts    Options
	store   *Store
	judge   *Judge
	admin   *AdminClient
	lease   *Lease
	metrics *metrics
	log     *slog.Logger
	out     io.Writer

	run     *Run
	stageID int64
	// livePercent is what a dry run judges (the live rollout's percent).
	livePercent int
}

// RunCanary drives cfg's canary until it is promoted (Outcome Promoted),
// rolled back (RolledBack) or an error: ErrLeaseHeld when another
// controller drives the endpoint, ErrInterrupted when ctx ends, ErrConfig
// for a configuration the judge refuses, others (Prometheus, the API, the
// database) wrapped. A live run of the endpoint left by an earlier
// controller is resumed at its stage (or its rollback finished).
func RunCanary(ctx context.Context, cfg Config, store *Store, opts Options) (Result, error) {
	if opts.Scrape <= 0 {
		opts.Scrape = 15 * time.Second
	}
	if err := cfg.Validate(opts.Scrape); err != nil {
		return Result{}, err
	}
	if opts.Owner == "" {
		host, _ := os.Hostname()
		opts.Owner = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	c := &controller{cfg: &cfg, opts: opts, store: store, out: opts.Out, log: opts.Logger}
	if c.out == nil {
		c.out = io.Discard
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.log = c.log.With("endpoint", cfg.Endpoint)
	var err error
	if c.judge, err = NewJudge(opts.Prometheus, c.cfg, opts.Scrape); err != nil {
		return Result{}, err
	}
	if err := c.judge.Preflight(ctx); err != nil {
		return Result{}, fmt.Errorf("prometheus: %w", err)
	}
	c.admin = NewAdminClient(opts.Target, opts.AdminToken)
	live, err := c.admin.Get(ctx, cfg.Endpoint)
	if err != nil {
		return Result{}, fmt.Errorf("target: %w", err)
	}
	c.livePercent = live.Percent
	c.metrics = newMetrics(opts.Registerer, cfg.Endpoint)
	c.metrics.stage.WithLabelValues(cfg.Endpoint).Set(float64(live.Percent))
	if !opts.DryRun {
		if c.lease, err = store.Acquire(ctx, cfg.Endpoint, opts.Owner); err != nil {
			return Result{}, err
		}
		defer c.lease.Release()
		if c.run, err = store.LiveRun(ctx, cfg.Endpoint); err != nil {
			return Result{}, err
		}
	}
	if c.run != nil {
		return c.resume(ctx)
	}
	return c.start(ctx)
}

func (c *controller) start(ctx context.Context) (Result, error) {
	conf, err := c.cfg.storedJSON()
	if err != nil {
		return Result{}, err
	}
	c.run = &Run{Endpoint: c.cfg.Endpoint, State: StateRunning, DryRun: c.opts.DryRun, StagePercent: c.cfg.Stages[0],
		Config: conf, Owner: c.opts.Owner}
	if err := c.store.CreateRun(ctx, c.run); err != nil {
		return Result{}, err
	}
	c.log.Info("canary run started", "run", c.run.ID, "stages", c.cfg.Stages, "dry_run", c.opts.DryRun)
	if err := c.enterStage(ctx, 0, "start", false); err != nil {
		return Result{}, err
	}
	return c.loop(ctx)
}

func (c *controller) resume(ctx context.Context) (Result, error) {
	r := c.run
	r.Owner = c.opts.Owner
	c.log.Info("resuming canary run", "run", r.ID, "state", r.State, "percent", r.StagePercent)
	_ = c.store.EndOpenStages(ctx, r.ID, "interrupted")
	if r.State == StateRollingBack {
		trigger, reason := deref(r.Trigger), deref(r.Reason)
		c.decide(ctx, Decision{Action: "resume", Trigger: trigger, Reason: "finishing the rollback begun by an earlier controller: " + reason})
		return c.rollback(ctx, trigger, reason, false)
	}
	idx := c.cfg.StageIndex(r.StagePercent)
	if idx < 0 {
		return Result{}, fmt.Errorf("%w: the live run %d of %s is at %d%%, which is not one of the stages %v: run with the configuration it started with, or 'parley canary abort' it",
			ErrConfig, r.ID, r.Endpoint, r.StagePercent, c.cfg.Stages)
	}
	if err := c.enterStage(ctx, idx, "resume", true); err != nil {
		return Result{}, err
	}
	return c.loop(ctx)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// put sets the endpoint's rollout to percent with the optimized path's
// switches, retrying for up to a check interval.
func (c *controller) put(ctx context.Context, percent int) error {
	u := chat.RolloutUpdate{Percent: &percent, Cache: &c.cfg.Optimized.Cache, Replica: &c.cfg.Optimized.Replica}
	if percent == 0 {
		u.Cache, u.Replica = nil, nil // the switches do nothing at 0; leave them armed
	}
	deadline := time.Now().Add(c.cfg.Interval)
	for {
		_, err := c.admin.Set(ctx, c.cfg.Endpoint, u)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("set %s to %d%%: %w", c.cfg.Endpoint, percent, err)
		}
		c.log.Warn("rollout change failed; retrying", "percent", percent, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// enterStage moves the run to stage idx: the queue reference before it,
// the intent saved, the PUT, the stage's start saved. A resumed stage starts
// its dwell again (the time the controller was away earns no checks).
func (c *controller) enterStage(ctx context.Context, idx int, action string, resumed bool) error {
	r := c.run
	percent := c.cfg.Stages[idx]
	if !resumed || r.QueueRef == nil {
		ref, q, err := c.judge.QueueRef(ctx, time.Now())
		if err != nil {
			c.log.Warn("queue wait reference", "query", q, "err", err)
		}
		r.QueueRef = nil
		if !math.IsNaN(ref) {
			r.QueueRef = &ref
		}
	}
	r.StageIndex, r.StagePercent = idx, percent
	r.Counters = Counters{}
	now := time.Now()
	r.StageStartedAt = &now
	if err := c.store.SaveRun(ctx, r); err != nil { // the intent: a restart re-applies it
		return err
	}
	if c.opts.DryRun {
		live, err := c.admin.Get(ctx, c.cfg.Endpoint)
		if err != nil {
			return fmt.Errorf("target: %w", err)
		}
		c.livePercent = live.Percent
	} else {
		if err := c.put(ctx, percent); err != nil {
			return err
		}
		c.livePercent = percent
		now = time.Now()
		r.StageStartedAt = &now
		if err := c.store.SaveRun(ctx, r); err != nil {
			return err
		}
	}
	id, err := c.store.StartStage(ctx, r.ID, idx, percent)
	if err != nil {
		return err
	}
	c.stageID = id
	c.metrics.stage.WithLabelValues(c.cfg.Endpoint).Set(float64(c.livePercent))
	reason := fmt.Sprintf("stage %d/%d at %d%% (cache %v, replica %v)", idx+1, len(c.cfg.Stages), percent, c.cfg.Optimized.Cache, c.cfg.Optimized.Replica)
	if c.opts.DryRun {
		reason = fmt.Sprintf("dry run: would set stage %d/%d at %d%%; judging the live %d%%", idx+1, len(c.cfg.Stages), percent, c.livePercent)
	}
	if r.QueueRef != nil {
		reason += fmt.Sprintf("; queue wait before it %s", ms(*r.QueueRef))
	}
	c.decide(ctx, Decision{Action: action, Reason: reason})
	fmt.Fprintf(c.out, "%s %s %s: %s\n", now.Format(time.TimeOnly), c.cfg.Endpoint, strings.ToUpper(action), reason)
	return nil
}

// decide stores and logs an operator-level decision (no check).
func (c *controller) decide(ctx context.Context, d Decision) {
	d.RunID, d.StagePercent = c.run.ID, c.run.StagePercent
	if err := c.store.AddDecision(context.WithoutCancel(ctx), &d); err != nil {
		c.log.Error("store decision", "err", err)
	}
	c.log.Info("canary decision", "run", c.run.ID, "percent", d.StagePercent, "verdict", d.Verdict, "action", d.Action,
		"trigger", d.Trigger, "reason", d.Reason)
}

func (c *controller) final() bool { return c.run.StageIndex == len(c.cfg.Stages)-1 }

// loop checks every interval and carries out operators' commands (polled
// every second) until the run ends.
func (c *controller) loop(ctx context.Context) (Result, error) {
	if c.final() && c.cfg.Bake == 0 {
		return c.promote(ctx, "reached 100%")
	}
	poll := min(250*time.Millisecond, c.cfg.Interval/4)
	tick := time.NewTicker(poll)
	defer tick.Stop()
	next := c.run.StageStartedAt.Add(c.cfg.Interval)
	guardEvery := max(c.opts.Scrape/2, 250*time.Millisecond)
	nextGuard := time.Now().Add(guardEvery)
	for {
		select {
		case <-ctx.Done():
			c.log.Info("canary controller interrupted; the run stays as it is", "run", c.run.ID, "percent", c.run.StagePercent)
			return Result{RunID: c.run.ID}, ErrInterrupted
		case <-tick.C:
		}
		if c.lease != nil {
			if err := c.lease.Check(ctx); err != nil {
				if ctx.Err() != nil {
					continue
				}
				return Result{RunID: c.run.ID}, err
			}
			cmd, err := c.store.TakeCommand(ctx, c.run.ID)
			if err != nil && ctx.Err() == nil {
				c.log.Warn("read operator command", "err", err)
			}
			if cmd != "" {
				if res, done, err := c.command(ctx, cmd); done || err != nil {
					return res, err
				}
				next = time.Now() // judge at once after a command
			}
		}
		now := time.Now()
		if now.Before(next) {
			if !c.cfg.Triggers.Breaker.Disabled && !now.Before(nextGuard) && next.Sub(now) > guardEvery/2 {
				nextGuard = now.Add(guardEvery)
				if res, done, err := c.guard(ctx, now); done || err != nil {
					return res, err
				}
			}
			continue
		}
		// Keep the cadence (a check's own time does not stretch it); after a
		// long stall start again from now.
		if next = next.Add(c.cfg.Interval); next.Before(now) {
			next = now.Add(c.cfg.Interval)
		}
		if res, done, err := c.check(ctx, now); done || err != nil {
			return res, err
		}
	}
}

// command carries out an operator's command.
func (c *controller) command(ctx context.Context, cmd string) (Result, bool, error) {
	r := c.run
	switch cmd {
	case CmdPause:
		r.State = StatePaused
		if err := c.store.SaveRun(ctx, r); err != nil {
			return Result{}, false, err
		}
		c.decide(ctx, Decision{Action: "pause", Reason: "paused by an operator: no advance, the triggers still roll back"})
	case CmdResume:
		r.State = StateRunning
		r.Counters.InconclusiveSince = nil
		if err := c.store.SaveRun(ctx, r); err != nil {
			return Result{}, false, err
		}
		c.decide(ctx, Decision{Action: "resume", Reason: "resumed by an operator"})
	case CmdPromote:
		c.decide(ctx, Decision{Action: "promote", Reason: "promoted by an operator: skipping to 100%"})
		if err := c.enterStage(ctx, len(c.cfg.Stages)-1, "advance", false); err != nil {
			return Result{}, true, err
		}
		res, err := c.promote(ctx, "promoted by an operator")
		return res, true, err
	case CmdAbort:
		res, err := c.rollback(ctx, TriggerAbort, "aborted by an operator", false)
		return res, true, err
	}
	fmt.Fprintf(c.out, "%s %s %s by an operator\n", time.Now().Format(time.TimeOnly), c.cfg.Endpoint, strings.ToUpper(cmd))
	return Result{}, false, nil
}

// check judges once and acts on the verdict.
func (c *controller) check(ctx context.Context, now time.Time) (Result, bool, error) {
	r := c.run
	holdEnds := c.holdEnds()
	chk := c.judge.Check(ctx, JudgeInput{
		Now: now, Percent: c.livePercent, SettledAt: r.StageStartedAt.Add(c.cfg.Settle), HoldEnded: !now.Before(holdEnds),
		QueueRef: queueRef(r.QueueRef), Saturated: r.Counters.Saturated, SaturationPoll: r.Counters.SaturationPoll,
	})
	return c.act(ctx, now, chk, holdEnds)
}

// holdEnds is when the current stage's hold is over.
func (c *controller) holdEnds() time.Time {
	hold := c.cfg.Dwell
	if c.final() {
		hold = c.cfg.Bake
	}
	return c.run.StageStartedAt.Add(c.cfg.Settle + hold)
}

// guard runs the immediate trigger (the replica breaker) alone, every
// half scrape interval between the checks: an opening is acted on as soon as
// Prometheus has it, not at the next check. Only a failure is a decision.
func (c *controller) guard(ctx context.Context, now time.Time) (Result, bool, error) {
	m := c.judge.breaker(ctx, JudgeInput{Now: now})
	if m.Verdict != Fail {
		return Result{}, false, nil
	}
	chk := Check{At: now, Percent: c.livePercent, Verdict: Fail, Trigger: m.Trigger, Immediate: true,
		Reason: m.Reason + " (guard between checks)", Measurements: []Measurement{m}}
	return c.act(ctx, now, chk, c.holdEnds())
}

// act decides on a check, stores and prints the decision and carries it out.
func (c *controller) act(ctx context.Context, now time.Time, chk Check, holdEnds time.Time) (Result, bool, error) {
	r := c.run
	if ctx.Err() != nil {
		return Result{RunID: r.ID}, true, ErrInterrupted
	}
	if sat, poll, ok := chk.Saturated(); ok {
		r.Counters.SaturationPoll = poll
		r.Counters.Saturated = append(r.Counters.Saturated, sat)
		if n := c.cfg.Triggers.Saturation.N; len(r.Counters.Saturated) > n {
			r.Counters.Saturated = r.Counters.Saturated[len(r.Counters.Saturated)-n:]
		}
	}
	c.metrics.checks.WithLabelValues(c.cfg.Endpoint, string(chk.Verdict)).Inc()
	action, reason := Decide(c.cfg, r, chk, now, holdEnds, c.final())
	meas, _ := json.Marshal(chk.Measurements)
	// The trigger names what failed; an inconclusive check's reason says
	// what it lacked.
	trigger := ""
	switch chk.Verdict {
	case Fail:
		trigger = chk.Trigger
	case Error:
		trigger = TriggerJudgeError
	}
	c.decide(ctx, Decision{Verdict: string(chk.Verdict), Action: action, Trigger: trigger, Reason: reason, Measurements: meas})
	c.progress(now, chk, action, reason, holdEnds)
	if c.opts.DryRun && action != ActionHold && action != ActionPause {
		reason = "dry run: would " + action + ": " + reason
	}
	switch action {
	case ActionRollback:
		res, err := c.rollback(ctx, trigger, reason, chk.Verdict == Error)
		return res, true, err
	case ActionAdvance:
		if err := c.store.EndStage(ctx, c.stageID, "advanced"); err != nil {
			return Result{}, true, err
		}
		if err := c.enterStage(ctx, r.StageIndex+1, "advance", false); err != nil {
			return Result{}, true, err
		}
		if c.final() && c.cfg.Bake == 0 {
			res, err := c.promote(ctx, "reached 100%")
			return res, true, err
		}
	case ActionPromote:
		res, err := c.promote(ctx, reason)
		return res, true, err
	case ActionPause:
		r.State = StatePaused
	}
	return Result{}, false, c.store.SaveRun(ctx, r)
}

func queueRef(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

// Actions of a check.
const (
	ActionHold     = "hold"
	ActionAdvance  = "advance"
	ActionPromote  = "promote"
	ActionRollback = "rollback"
	ActionPause    = "pause"
)

// Decide is the controller's policy on one check, updating run's counters:
//   - a failed check of an immediate trigger (the breaker) rolls back; other
//     failures roll back after FailureLimit in a row;
//   - ErrorLimit checks in a row that could not query roll back (blind);
//   - inconclusive checks hold the stage (never advance, never fail); after
//     InconclusiveLimit of them in a row a running run pauses for a human;
//   - a pass counts; once the hold is over with MinChecks passes (and the
//     hold-end check, which adds the stage-wide tests, passed) the run
//     advances, or at the last stage is promoted. A paused run holds.
func Decide(cfg *Config, run *Run, chk Check, now, holdEnds time.Time, final bool) (action, reason string) {
	cnt := &run.Counters
	cnt.Checks++
	switch chk.Verdict {
	case Fail:
		cnt.Errors, cnt.InconclusiveSince = 0, nil
		cnt.Fails++
		if chk.Immediate {
			return ActionRollback, chk.Trigger + " (immediate): " + chk.Reason
		}
		if cnt.Fails >= cfg.FailureLimit {
			return ActionRollback, fmt.Sprintf("%s failed %d checks in a row: %s", chk.Trigger, cnt.Fails, chk.Reason)
		}
		return ActionHold, fmt.Sprintf("%s failed (%d of %d in a row before a rollback): %s", chk.Trigger, cnt.Fails, cfg.FailureLimit, chk.Reason)
	case Error:
		cnt.Errors++
		if cnt.Errors >= cfg.ErrorLimit {
			return ActionRollback, fmt.Sprintf("the judge could not query %d checks in a row (rolling back blind): %s", cnt.Errors, chk.Reason)
		}
		return ActionHold, fmt.Sprintf("judge error %d of %d: %s", cnt.Errors, cfg.ErrorLimit, chk.Reason)
	case Inconclusive:
		cnt.Fails, cnt.Errors = 0, 0
		if cnt.InconclusiveSince == nil {
			t := now
			cnt.InconclusiveSince = &t
		}
		if run.State == StateRunning && now.Sub(*cnt.InconclusiveSince) >= cfg.InconclusiveLimit {
			return ActionPause, fmt.Sprintf("inconclusive for %v (%s): paused for a human; 'parley canary resume' goes on, 'abort' rolls back",
				now.Sub(*cnt.InconclusiveSince).Round(time.Second), chk.Reason)
		}
		return ActionHold, "inconclusive: " + chk.Reason
	}
	cnt.Fails, cnt.Errors, cnt.InconclusiveSince = 0, 0, nil
	cnt.Passes++
	switch {
	case run.State == StatePaused:
		return ActionHold, "paused"
	case now.Before(holdEnds):
		return ActionHold, fmt.Sprintf("pass %d; hold %v more", cnt.Passes, holdEnds.Sub(now).Round(time.Second))
	case cnt.Passes < cfg.MinChecks:
		return ActionHold, fmt.Sprintf("pass %d of the %d a stage needs", cnt.Passes, cfg.MinChecks)
	case final:
		return ActionPromote, fmt.Sprintf("100%% held with %d passing checks", cnt.Passes)
	}
	return ActionAdvance, fmt.Sprintf("stage passed: %d passing checks, the stage-wide tests passed", cnt.Passes)
}

// progress prints one line per check.
func (c *controller) progress(now time.Time, chk Check, action, reason string, holdEnds time.Time) {
	var parts []string
	for _, m := range chk.Measurements {
		if m.Summary != "" {
			parts = append(parts, m.Summary)
		}
	}
	tail := action
	switch {
	case action == ActionHold && chk.Verdict == Pass && now.Before(holdEnds):
		tail = fmt.Sprintf("hold (%v left)", holdEnds.Sub(now).Round(time.Second))
	case action != ActionHold || chk.Verdict != Pass:
		tail = action + ": " + reason
	}
	fmt.Fprintf(c.out, "%s %s %3d%% stage %d/%d check %d %-12s %s → %s\n", now.Format(time.TimeOnly), c.cfg.Endpoint,
		c.livePercent, c.run.StageIndex+1, len(c.cfg.Stages), c.run.Counters.Checks, chk.Verdict, strings.Join(parts, " | "), tail)
}

// rollback puts the endpoint back at 0% (the intent saved first, so that a
// controller killed half-way finishes it when started again). It goes on
// when ctx has ended: a rollback is never left half done by a Ctrl-C.
func (c *controller) rollback(ctx context.Context, trigger, reason string, blind bool) (Result, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Interval+10*time.Second)
	defer cancel()
	r := c.run
	start := time.Now()
	r.State = StateRollingBack
	r.Trigger, r.Reason = &trigger, &reason
	res := Result{Outcome: RolledBack, RunID: r.ID, Trigger: trigger, Reason: reason, Blind: blind}
	if r.DryRun {
		r.State = StateRolledBack
		r.FinishedAt = &start
		_ = c.store.SaveRun(ctx, r)
		c.decide(ctx, Decision{Action: "rolled_back", Trigger: trigger, Reason: "dry run: would roll back to 0%: " + reason})
		fmt.Fprintf(c.out, "%s %s DRY RUN: would ROLL BACK to 0%% (%s): %s\n", start.Format(time.TimeOnly), c.cfg.Endpoint, trigger, reason)
		return res, nil
	}
	if err := c.store.SaveRun(ctx, r); err != nil {
		c.log.Error("save the rollback's intent", "err", err) // roll back anyway
	}
	if err := c.put(ctx, 0); err != nil {
		return res, fmt.Errorf("rollback failed (the run stays rolling_back; start the controller again or PUT percent 0 by hand): %w", err)
	}
	done := time.Now()
	r.State = StateRolledBack
	r.StagePercent = 0
	r.FinishedAt = &done
	if err := c.store.SaveRun(ctx, r); err != nil {
		c.log.Error("save the rollback", "err", err)
	}
	_ = c.store.EndStage(ctx, c.stageID, "rolled_back")
	c.livePercent = 0
	c.metrics.stage.WithLabelValues(c.cfg.Endpoint).Set(0)
	c.metrics.rollbacks.WithLabelValues(c.cfg.Endpoint, trigger).Inc()
	c.decide(ctx, Decision{Action: "rolled_back", Trigger: trigger,
		Reason: fmt.Sprintf("at 0%% %v after the decision: %s", done.Sub(start).Round(time.Millisecond), reason)})
	fmt.Fprintf(c.out, "%s %s ROLLED BACK to 0%% in %v (%s): %s\n", done.Format(time.TimeOnly), c.cfg.Endpoint,
		done.Sub(start).Round(time.Millisecond), trigger, reason)
	return res, nil
}

// promote ends the run at 100%.
func (c *controller) promote(ctx context.Context, reason string) (Result, error) {
	r := c.run
	now := time.Now()
	r.State = StatePromoted
	r.FinishedAt = &now
	if err := c.store.SaveRun(ctx, r); err != nil {
		return Result{}, err
	}
	_ = c.store.EndStage(ctx, c.stageID, "promoted")
	msg := reason
	if r.DryRun {
		msg = "dry run: would promote: " + reason
	}
	c.decide(ctx, Decision{Action: "promoted", Reason: msg})
	fmt.Fprintf(c.out, "%s %s PROMOTED: %s\n", now.Format(time.TimeOnly), c.cfg.Endpoint, msg)
	return Result{Outcome: Promoted, RunID: r.ID, Reason: reason}, nil
}
