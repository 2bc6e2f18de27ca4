package canary

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/parley-chat/parley/internal/chat"
)

// Verdict is the outcome of one trigger or of one whole check.
type Verdict string

// Verdicts. Report is a measurement that informs but does not decide (a
// Mann–Whitney series still too short, a relative trigger at 100%).
const (
	Pass         Verdict = "pass"
	Fail         Verdict = "fail"
	Inconclusive Verdict = "inconclusive"
	Error        Verdict = "error"
	Report       Verdict = "report"
)

// Trigger names (the measurement's trigger, the rollback counter's label).
const (
	TriggerErrors      = "errors"
	TriggerLatency     = "latency"
	TriggerMannWhitney = "mann_whitney"
	TriggerQueueWait   = "queue_wait"
	TriggerSaturation  = "saturation"
	TriggerBreaker     = "breaker"
	TriggerApplied     = "rollout_applied"
	TriggerAbort       = "abort"
	TriggerJudgeError  = "judge_error"
)

// Measurement is one trigger's evaluation in one check: the queries it
// ran, the values per cohort, the sample counts, the statistics and the
// verdict with its reason. It is stored with the decision as it is.
type Measurement struct {
	Trigger string             `json:"trigger"`
	Verdict Verdict            `json:"verdict"`
	Reason  string             `json:"reason"`
	Queries []string           `json:"queries"`
	Values  map[string]float64 `json:"values,omitempty"`  // per cohort (optimized, baseline) or "value", "ref"
	Samples map[string]float64 `json:"samples,omitempty"` // requests (or series points) per cohort
	Stats   map[string]float64 `json:"stats,omitempty"`   // p-values, U, thresholds
	// Immediate: a failure that rolls back at once (the breaker).
	Immediate bool `json:"immediate,omitempty"`
	// Summary is the short form in the progress line.
	Summary string `json:"summary"`
}

// Check is one judgement of the canary: every trigger's measurement and
// the verdict they add up to: Fail if any failed, else Error if a query
// failed, else Inconclusive if any could not decide, else Pass.
type Check struct {
	At           time.Time     `json:"at"`
	Percent      int           `json:"percent"`
	Verdict      Verdict       `json:"verdict"`
	Trigger      string        `json:"trigger,omitempty"` // the first failing trigger
	Immediate    bool          `json:"immediate,omitempty"`
	Reason       string        `json:"reason,omitempty"`
	Measurements []Measurement `json:"measurements"`
}

// JudgeInput is what a check needs besides the configuration.
type JudgeInput struct {
	Now     time.Time
	Percent int // the stage's percent (at 100 only the absolute triggers decide)
	// SettledAt is when the stage's window holds only the new stage: the
	// cohort triggers are inconclusive before it.
	SettledAt time.Time
	// HoldEnded: the dwell is over; the stage-wide error test and the
	// Mann–Whitney test (when long enough) join the verdict.
	HoldEnded bool
	// QueueRef is PgBouncer's queue wait before the stage (NaN: unknown).
	QueueRef float64
	// Saturated holds the saturation outcomes of the stage's previous
	// distinct PgBouncer polls (newest last), SaturationPoll the timestamp
	// of the last one counted; Check counts a new poll once.
	Saturated      []bool
	SaturationPoll float64
}

// Judge evaluates checks on Prometheus.
type Judge struct {
	api    promv1.API
	cfg    *Config
	sel    string // selector prefix: "" or `matchers,`
	routes string // route matcher
	scrape time.Duration
}

// NewJudge returns a judge of cfg (validated) on the Prometheus at url.
func NewJudge(url string, cfg *Config, scrape time.Duration) (*Judge, error) {
	client, err := promapi.NewClient(promapi.Config{Address: url})
	if err != nil {
		return nil, fmt.Errorf("%w: prometheus URL: %w", ErrConfig, err)
	}
	sel := ""
	if strings.TrimSpace(cfg.Selector) != "" {
		sel = strings.TrimSpace(cfg.Selector) + ","
	}
	return &Judge{api: promv1.NewAPI(client), cfg: cfg, sel: sel, routes: cfg.routeMatcher(), scrape: scrape}, nil
}

func promDur(d time.Duration) string {
	return model.Duration(d.Round(time.Millisecond)).String()
}

// query runs an instant query and returns its samples by the value of
// label (or "" when label is ""). An empty result is an empty map.
func (j *Judge) query(ctx context.Context, q string, at time.Time, label string) (map[string]float64, error) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, _, _, err := j.api.Query(qctx, q, at)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", q, err)
	}
	out := map[string]float64{}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("query %s: want a vector, got %s", q, v.Type())
	}
	for _, s := range vec {
		out[string(s.Metric[model.LabelName(label)])] = float64(s.Value)
	}
	return out, nil
}

// series runs a range query and returns each series' values by label.
func (j *Judge) series(ctx context.Context, q string, from, to time.Time, step time.Duration, label string) (map[string][]float64, error) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, _, _, err := j.api.QueryRange(qctx, q, promv1.Range{Start: from, End: to, Step: step})
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", q, err)
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return nil, fmt.Errorf("query %s: want a matrix, got %s", q, v.Type())
	}
	out := map[string][]float64{}
	for _, s := range m {
		k := string(s.Metric[model.LabelName(label)])
		for _, p := range s.Values {
			out[k] = append(out[k], float64(p.Value))
		}
	}
	return out, nil
}

// Preflight runs one query of every kind the judge uses, so that a bad
// selector or an unreachable Prometheus fails before anything changes.
func (j *Judge) Preflight(ctx context.Context) error {
	_, err := j.query(ctx, fmt.Sprintf(`sum by (cohort) (increase(parley_http_requests_total{%s%s}[%s]))`, j.sel, j.routes, promDur(j.cfg.Window)), time.Now(), "cohort")
	var perr *promv1.Error
	if errors.As(err, &perr) && perr.Type == promv1.ErrBadData {
		return fmt.Errorf("%w: selector %q: %w", ErrConfig, j.cfg.Selector, err)
	}
	return err
}

// QueueRef is PgBouncer's queue wait averaged over the reference window
// ending at `at` (NaN when there is no data).
func (j *Judge) QueueRef(ctx context.Context, at time.Time) (float64, string, error) {
	q := fmt.Sprintf(`max(avg_over_time(parley_pgbouncer_queue_wait_seconds{%s}[%s]))`, strings.TrimSuffix(j.sel, ","), promDur(j.cfg.Triggers.QueueWait.RefWindow))
	v, err := j.query(ctx, q, at, "")
	if err != nil {
		return math.NaN(), q, err
	}
	if x, ok := v[""]; ok {
		return x, q, nil
	}
	return math.NaN(), q, nil
}

// Check evaluates every enabled trigger at in.Now.
func (j *Judge) Check(ctx context.Context, in JudgeInput) Check {
	c := Check{At: in.Now, Percent: in.Percent}
	t := &j.cfg.Triggers
	applied := j.applied(ctx, in)
	c.Measurements = append(c.Measurements, applied)
	cohortsReady := applied.Verdict == Pass && !in.Now.Before(in.SettledAt)
	notReady := func(trigger string) Measurement {
		m := Measurement{Trigger: trigger, Verdict: Inconclusive, Summary: trigger + " settling"}
		if applied.Verdict != Pass {
			m.Reason = "instances have not all applied the stage: " + applied.Reason
		} else {
			m.Reason = fmt.Sprintf("settling until %s (the window must hold only this stage)", in.SettledAt.Format(time.TimeOnly))
		}
		return m
	}
	// The triggers query in parallel; the measurements keep this order.
	var parts []func() []Measurement
	add := func(f func() []Measurement) { parts = append(parts, f) }
	one := func(m Measurement) []Measurement { return []Measurement{m} }
	if !t.Errors.Disabled {
		add(func() []Measurement {
			switch {
			case in.Percent >= 100:
				return one(Measurement{Trigger: TriggerErrors, Verdict: Report, Reason: "no baseline cohort at 100%", Summary: "errors n/a at 100%"})
			case !cohortsReady:
				return one(notReady(TriggerErrors))
			}
			ms := one(j.errors(ctx, in.Now, j.cfg.Window, "window"))
			if in.HoldEnded {
				ms = append(ms, j.errors(ctx, in.Now, in.Now.Sub(in.SettledAt)+j.cfg.Window, "stage"))
			}
			return ms
		})
	}
	if !t.Latency.Disabled {
		add(func() []Measurement {
			if cohortsReady || (in.Percent >= 100 && !in.Now.Before(in.SettledAt)) {
				return one(j.latency(ctx, in.Now))
			}
			return one(notReady(TriggerLatency))
		})
	}
	if !t.MannWhitney.Disabled && in.Percent < 100 && cohortsReady {
		add(func() []Measurement { return one(j.mannWhitney(ctx, in)) })
	}
	if !t.QueueWait.Disabled {
		add(func() []Measurement { return one(j.queueWait(ctx, in)) })
	}
	if !t.Saturation.Disabled {
		add(func() []Measurement { return one(j.saturation(ctx, in)) })
	}
	if !t.Breaker.Disabled {
		add(func() []Measurement { return one(j.breaker(ctx, in)) })
	}
	results := make([][]Measurement, len(parts))
	var wg sync.WaitGroup
	for i, f := range parts {
		wg.Go(func() { results[i] = f() })
	}
	wg.Wait()
	for _, r := range results {
		c.Measurements = append(c.Measurements, r...)
	}
	c.Verdict = Pass
	rank := map[Verdict]int{Pass: 0, Report: 0, Inconclusive: 1, Error: 2, Fail: 3}
	for _, m := range c.Measurements {
		if rank[m.Verdict] > rank[c.Verdict] {
			c.Verdict, c.Trigger, c.Reason = m.Verdict, m.Trigger, m.Reason
		}
		if m.Verdict == Fail && m.Immediate && !c.Immediate {
			c.Immediate, c.Trigger, c.Reason = true, m.Trigger, m.Reason
		}
	}
	if c.Verdict == Pass {
		c.Trigger, c.Reason = "", ""
	}
	return c
}

// Saturated returns the saturation outcome of a check's PgBouncer poll and
// the poll's timestamp; ok is false when the check counted no new poll.
func (c Check) Saturated() (over bool, poll float64, ok bool) {
	for _, m := range c.Measurements {
		if m.Trigger == TriggerSaturation && m.Stats != nil && m.Stats["new_poll"] == 1 {
			return m.Stats["over"] == 1, m.Stats["poll_timestamp"], true
		}
	}
	return false, 0, false
}

func errMeasurement(trigger string, queries []string, err error) Measurement {
	return Measurement{Trigger: trigger, Verdict: Error, Reason: err.Error(), Queries: queries, Summary: trigger + " ERROR"}
}

// applied: every scraped instance has applied the stage's percent.
func (j *Judge) applied(ctx context.Context, in JudgeInput) Measurement {
	sel := fmt.Sprintf(`parley_rollout_percent{%sendpoint=%q}`, j.sel, j.cfg.Endpoint)
	qmin, qmax := "min("+sel+")", "max("+sel+")"
	m := Measurement{Trigger: TriggerApplied, Queries: []string{qmin, qmax}}
	lo, err := j.query(ctx, qmin, in.Now, "")
	if err != nil {
		return errMeasurement(TriggerApplied, m.Queries, err)
	}
	hi, err := j.query(ctx, qmax, in.Now, "")
	if err != nil {
		return errMeasurement(TriggerApplied, m.Queries, err)
	}
	l, ok1 := lo[""]
	h, ok2 := hi[""]
	if !ok1 || !ok2 {
		m.Verdict, m.Reason, m.Summary = Inconclusive, "no instance scraped (parley_rollout_percent absent): is Prometheus scraping the servers?", "instances none"
		return m
	}
	m.Values = map[string]float64{"min": l, "max": h}
	if int(l) != in.Percent || int(h) != in.Percent {
		m.Verdict = Inconclusive
		m.Reason = fmt.Sprintf("instances at %g–%g%%, want %d%%", l, h, in.Percent)
		m.Summary = fmt.Sprintf("instances %g–%g%%", l, h)
		return m
	}
	m.Verdict, m.Reason, m.Summary = Pass, fmt.Sprintf("every instance at %d%%", in.Percent), ""
	return m
}

// errors: the canary's 5xx ratio against the baseline's over window.
func (j *Judge) errors(ctx context.Context, now time.Time, window time.Duration, scope string) Measurement {
	cfg := j.cfg.Triggers.Errors
	w := promDur(window)
	qe := fmt.Sprintf(`sum by (cohort) (increase(parley_http_requests_total{%s%s,code=~"5.."}[%s]))`, j.sel, j.routes, w)
	qn := fmt.Sprintf(`sum by (cohort) (increase(parley_http_requests_total{%s%s}[%s]))`, j.sel, j.routes, w)
	name := TriggerErrors
	m := Measurement{Trigger: name, Queries: []string{qe, qn}}
	e, err := j.query(ctx, qe, now, "cohort")
	if err != nil {
		return errMeasurement(name, m.Queries, err)
	}
	n, err := j.query(ctx, qn, now, "cohort")
	if err != nil {
		return errMeasurement(name, m.Queries, err)
	}
	ec, eb := math.Round(e[chat.CohortOptimized]), math.Round(e[chat.CohortBaseline])
	nc, nb := math.Round(n[chat.CohortOptimized]), math.Round(n[chat.CohortBaseline])
	m.Samples = map[string]float64{"optimized": nc, "baseline": nb}
	m.Values = map[string]float64{"optimized": ratio(ec, nc), "baseline": ratio(eb, nb)}
	m.Stats = map[string]float64{"errors_optimized": ec, "errors_baseline": eb, "window_seconds": window.Seconds()}
	label := "errors"
	if scope == "stage" {
		label = "errors(stage)"
	}
	m.Summary = fmt.Sprintf("%s opt %g/%g base %g/%g", label, ec, nc, eb, nb)
	min := float64(cfg.MinRequests)
	if nc < min || nb < min {
		m.Verdict = Inconclusive
		m.Reason = fmt.Sprintf("%s: too few requests (optimized %g, baseline %g; need %d each in %s)", scope, nc, nb, cfg.MinRequests, w)
		return m
	}
	p := PoissonRatioTest(ec, nc, eb, nb, cfg.MaxIncrease)
	m.Stats["p_value"] = p
	m.Summary += fmt.Sprintf(" p=%.3g", p)
	rc, rb := ratio(ec, nc), ratio(eb, nb)
	if p < cfg.Alpha && rc-rb > cfg.AbsFloor {
		m.Verdict = Fail
		m.Reason = fmt.Sprintf("%s: optimized 5xx ratio %.4f vs baseline %.4f (%d vs %d of %d/%d requests): more than +%g%% at p=%.2g < %g and %.4f above",
			scope, rc, rb, int(ec), int(eb), int(nc), int(nb), cfg.MaxIncrease*100, p, cfg.Alpha, rc-rb)
		return m
	}
	m.Verdict = Pass
	m.Reason = fmt.Sprintf("%s: optimized %.4f vs baseline %.4f (p=%.2g, floor %.4f)", scope, rc, rb, p, cfg.AbsFloor)
	return m
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

// latency: the canary's p95 against the SLO × factor (absolute).
func (j *Judge) latency(ctx context.Context, now time.Time) Measurement {
	cfg := j.cfg.Triggers.Latency
	w := promDur(j.cfg.Window)
	qp := fmt.Sprintf(`histogram_quantile(0.95, sum by (le, cohort) (rate(parley_http_request_duration_seconds_bucket{%s%s}[%s])))`, j.sel, j.routes, w)
	qn := fmt.Sprintf(`sum by (cohort) (increase(parley_http_request_duration_seconds_count{%s%s}[%s]))`, j.sel, j.routes, w)
	m := Measurement{Trigger: TriggerLatency, Queries: []string{qp, qn}}
	p, err := j.query(ctx, qp, now, "cohort")
	if err != nil {
		return errMeasurement(m.Trigger, m.Queries, err)
	}
	n, err := j.query(ctx, qn, now, "cohort")
	if err != nil {
		return errMeasurement(m.Trigger, m.Queries, err)
	}
	limit := j.cfg.SLO.P95.Seconds() * cfg.Factor
	pc, okc := p[chat.CohortOptimized]
	pb := p[chat.CohortBaseline]
	nc := math.Round(n[chat.CohortOptimized])
	m.Samples = map[string]float64{"optimized": nc, "baseline": math.Round(n[chat.CohortBaseline])}
	m.Values = map[string]float64{}
	if okc && !math.IsNaN(pc) {
		m.Values["optimized"] = pc
	}
	if !math.IsNaN(pb) {
		m.Values["baseline"] = pb
	}
	m.Stats = map[string]float64{"limit_seconds": limit}
	m.Summary = fmt.Sprintf("p95 opt %s base %s (limit %s)", ms(pc), ms(pb), ms(limit))
	if nc < float64(cfg.MinRequests) || !okc || math.IsNaN(pc) {
		m.Verdict = Inconclusive
		m.Reason = fmt.Sprintf("too few optimized requests for a p95 (%g; need %d in %s)", nc, cfg.MinRequests, w)
		return m
	}
	if pc > limit {
		m.Verdict = Fail
		m.Reason = fmt.Sprintf("optimized p95 %s over the SLO %s × %g = %s", ms(pc), j.cfg.SLO.P95, cfg.Factor, ms(limit))
		return m
	}
	m.Verdict = Pass
	m.Reason = fmt.Sprintf("optimized p95 %s within %s", ms(pc), ms(limit))
	return m
}

func ms(s float64) string {
	if math.IsNaN(s) {
		return "n/a"
	}
	return fmt.Sprintf("%.1fms", s*1000)
}

// mannWhitney compares the cohorts' per-interval series over the stage.
func (j *Judge) mannWhitney(ctx context.Context, in JudgeInput) Measurement {
	cfg := j.cfg.Triggers.MannWhitney
	step := j.cfg.Interval
	rw := max(step, 4*j.scrape)
	r := promDur(rw)
	qe := fmt.Sprintf(`sum by (cohort) (rate(parley_http_requests_total{%s%s,code=~"5.."}[%s])) / sum by (cohort) (rate(parley_http_requests_total{%s%s}[%s]))`, j.sel, j.routes, r, j.sel, j.routes, r)
	qp := fmt.Sprintf(`histogram_quantile(0.95, sum by (le, cohort) (rate(parley_http_request_duration_seconds_bucket{%s%s}[%s])))`, j.sel, j.routes, r)
	m := Measurement{Trigger: TriggerMannWhitney, Queries: []string{qe, qp}}
	from := in.SettledAt
	if in.Now.Sub(from) < step {
		from = in.Now.Add(-step)
	}
	es, err := j.series(ctx, qe, from, in.Now, step, "cohort")
	if err != nil {
		return errMeasurement(m.Trigger, m.Queries, err)
	}
	ps, err := j.series(ctx, qp, from, in.Now, step, "cohort")
	if err != nil {
		return errMeasurement(m.Trigger, m.Queries, err)
	}
	m.Stats = map[string]float64{}
	m.Values = map[string]float64{}
	m.Samples = map[string]float64{}
	points := math.MaxInt
	type metric struct {
		name  string
		s     map[string][]float64
		floor float64
	}
	var failures []string
	var parts []string
	for _, mt := range []metric{{"error_ratio", es, 0.002}, {"p95", ps, 0.005}} {
		x, y := finite(mt.s[chat.CohortOptimized]), finite(mt.s[chat.CohortBaseline])
		points = min(points, len(x), len(y))
		res := MannWhitney(x, y)
		mx, my := mean(x), mean(y)
		m.Stats[mt.name+"_u"] = res.U
		m.Stats[mt.name+"_p_greater"] = res.PGreater
		m.Values[mt.name+"_optimized_mean"] = nanZero(mx)
		m.Values[mt.name+"_baseline_mean"] = nanZero(my)
		m.Samples[mt.name+"_optimized"] = float64(len(x))
		m.Samples[mt.name+"_baseline"] = float64(len(y))
		parts = append(parts, fmt.Sprintf("%s p=%.2g", mt.name, res.PGreater))
		if res.PGreater < cfg.Alpha && !math.IsNaN(mx) && !math.IsNaN(my) && mx > my*(1+cfg.MaxIncrease) && mx-my > mt.floor {
			failures = append(failures, fmt.Sprintf("%s: optimized mean %.4g vs baseline %.4g, U=%g, p=%.2g < %g", mt.name, mx, my, res.U, res.PGreater, cfg.Alpha))
		}
	}
	m.Summary = fmt.Sprintf("mw %s (%d pts)", strings.Join(parts, " "), points)
	switch {
	case points < cfg.MinPoints || !in.HoldEnded:
		m.Verdict = Report
		m.Reason = fmt.Sprintf("%d points per series (decides at the end of the dwell with at least %d)", points, cfg.MinPoints)
	case len(failures) > 0:
		m.Verdict = Fail
		m.Reason = strings.Join(failures, "; ")
	default:
		m.Verdict = Pass
		m.Reason = fmt.Sprintf("no series of the optimized cohort significantly higher (%d points)", points)
	}
	return m
}

func nanZero(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}

// queueWait: PgBouncer's queue wait against the reference before the stage.
func (j *Judge) queueWait(ctx context.Context, in JudgeInput) Measurement {
	cfg := j.cfg.Triggers.QueueWait
	sel := strings.TrimSuffix(j.sel, ",")
	q := fmt.Sprintf(`max(avg_over_time(parley_pgbouncer_queue_wait_seconds{%s}[%s]))`, sel, promDur(j.cfg.Window))
	qu := fmt.Sprintf(`min(parley_pgbouncer_up{%s})`, sel)
	m := Measurement{Trigger: TriggerQueueWait, Queries: []string{q, qu}}
	v, err := j.query(ctx, q, in.Now, "")
	if err != nil {
		return errMeasurement(m.Trigger, m.Queries, err)
	}
	up, err := j.query(ctx, qu, in.Now, "")
	if err != nil {
		return errMeasurement(m.Trigger, m.Queries, err)
	}
	x, ok := v[""]
	if u, uok := up[""]; !uok || u != 1 || !ok {
		m.Verdict, m.Reason, m.Summary = Inconclusive, "no PgBouncer data (the PgBouncer monitor is off or cannot reach the console)", "queue n/a"
		return m
	}
	ref := in.QueueRef
	if math.IsNaN(ref) {
		ref = 0
	}
	limit := math.Max(ref*(1+cfg.MaxIncrease), ref+cfg.AbsFloor.Seconds())
	m.Values = map[string]float64{"value": x, "ref": ref}
	m.Stats = map[string]float64{"limit_seconds": limit}
	m.Summary = fmt.Sprintf("queue %s (ref %s)", ms(x), ms(ref))
	if x > limit {
		m.Verdict = Fail
		m.Reason = fmt.Sprintf("PgBouncer queue wait %s over %s (ref %s before the stage: +%g%% and +%s)", ms(x), ms(limit), ms(ref), cfg.MaxIncrease*100, cfg.AbsFloor)
		return m
	}
	m.Verdict = Pass
	m.Reason = fmt.Sprintf("queue wait %s within %s", ms(x), ms(limit))
	return m
}

// saturation: PgBouncer's pool saturation at the monitor's latest poll,
// failing when K of the last N distinct polls were over Max. A poll is
// counted once however many checks see it (the monitor polls every 15 s by
// default: with shorter checks one busy instant would otherwise count
// several times); a poll older than a minute is stale (inconclusive).
func (j *Judge) saturation(ctx context.Context, in JudgeInput) Measurement {
	cfg := j.cfg.Triggers.Saturation
	sel := strings.TrimSuffix(j.sel, ",")
	q := fmt.Sprintf(`max(parley_pgbouncer_pool_saturation_ratio{%s})`, sel)
	qt := fmt.Sprintf(`max(parley_monitor_last_success_timestamp_seconds{%smonitor="pgbouncer"})`, j.sel)
	m := Measurement{Trigger: TriggerSaturation, Queries: []string{q, qt}}
	v, err := j.query(ctx, q, in.Now, "")
	if err != nil {
		return errMeasurement(m.Trigger, m.Queries, err)
	}
	ts, err := j.query(ctx, qt, in.Now, "")
	if err != nil {
		return errMeasurement(m.Trigger, m.Queries, err)
	}
	x, ok := v[""]
	poll, pok := ts[""]
	if !ok || !pok || poll <= 0 {
		m.Verdict, m.Reason, m.Summary = Inconclusive, "no PgBouncer pool data", "sat n/a"
		return m
	}
	age := float64(in.Now.UnixMilli())/1000 - poll
	if age > 60 {
		m.Verdict, m.Reason, m.Summary = Inconclusive, fmt.Sprintf("the PgBouncer monitor's last poll is %.0fs old", age), "sat stale"
		return m
	}
	over := x > cfg.Max
	fresh := poll != in.SaturationPoll
	hist := append([]bool(nil), in.Saturated...)
	if fresh {
		hist = append(hist, over)
	}
	if len(hist) > cfg.N {
		hist = hist[len(hist)-cfg.N:]
	}
	k := 0
	for _, o := range hist {
		if o {
			k++
		}
	}
	m.Values = map[string]float64{"value": x}
	m.Stats = map[string]float64{"over": b2f(over), "new_poll": b2f(fresh), "poll_timestamp": poll,
		"over_in_window": float64(k), "polls_in_window": float64(len(hist)), "max": cfg.Max}
	m.Summary = fmt.Sprintf("sat %.2f (%d/%d)", x, k, len(hist))
	if k >= cfg.K {
		m.Verdict = Fail
		m.Reason = fmt.Sprintf("PgBouncer pool saturation over %.2f in %d of the last %d polls (now %.2f)", cfg.Max, k, len(hist), x)
		return m
	}
	m.Verdict = Pass
	m.Reason = fmt.Sprintf("saturation %.2f; over %.2f in %d of %d polls (fails at %d)", x, cfg.Max, k, len(hist), cfg.K)
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// breaker: a replica breaker opened since the previous check, or one stuck
// open (every sample of the window, and at least 3: a server that has just
// started reports "open" until its first probe).
func (j *Judge) breaker(ctx context.Context, in JudgeInput) Measurement {
	sel := strings.TrimSuffix(j.sel, ",")
	since := promDur(j.cfg.Interval + 2*j.scrape)
	w := promDur(j.cfg.Window)
	qo := fmt.Sprintf(`sum(increase(parley_replica_breaker_transitions_total{%sto="open"}[%s]))`, j.sel, since)
	qs := fmt.Sprintf(`count((min_over_time(parley_replica_breaker_state{%s}[%s]) >= 2) and (count_over_time(parley_replica_breaker_state{%s}[%s]) >= 3))`, sel, w, sel, w)
	qn := fmt.Sprintf(`max(parley_replica_breaker_state{%s})`, sel)
	m := Measurement{Trigger: TriggerBreaker, Queries: []string{qo, qs, qn}, Immediate: true}
	opened, err := j.query(ctx, qo, in.Now, "")
	if err != nil {
		return errMeasurement(m.Trigger, m.Queries, err)
	}
	stuck, err := j.query(ctx, qs, in.Now, "")
	if err != nil {
		return errMeasurement(m.Trigger, m.Queries, err)
	}
	now, err := j.query(ctx, qn, in.Now, "")
	if err != nil {
		return errMeasurement(m.Trigger, m.Queries, err)
	}
	o, ok := opened[""]
	st := stuck[""]
	cur, curOK := now[""]
	m.Values = map[string]float64{"openings": o, "stuck_open": st}
	if curOK {
		m.Values["state_max"] = cur
	}
	states := map[float64]string{0: "closed", 1: "half-open", 2: "open"}
	m.Summary = "breaker " + states[cur]
	if !ok && !curOK {
		m.Immediate = false
		if j.cfg.Optimized.Replica {
			m.Verdict, m.Reason, m.Summary = Inconclusive, "no replica breaker series (are the servers configured with replicas?)", "breaker n/a"
		} else {
			m.Verdict, m.Reason, m.Summary = Pass, "no replicas", "breaker n/a"
		}
		return m
	}
	if o > 0 || st > 0 {
		m.Verdict = Fail
		m.Reason = fmt.Sprintf("replica breaker open: openings in the last %s (increase %.2f), %.0f stuck open", since, o, st)
		return m
	}
	m.Immediate = false
	m.Verdict = Pass
	m.Reason = "every replica breaker closed"
	return m
}
