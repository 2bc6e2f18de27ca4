package loadgen

import (
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Report is the result of a run: one entry per scenario.
type Report struct {
	Passed bool `json:"passed"`
	// Target is the target's host:port; with several targets, theirs
	// separated by commas (and each scenario has Targets).
	Target    string            `json:"target"`
	StartedAt time.Time         `json:"started_at"`
	Generator GeneratorInfo     `json:"generator"`
	Scenarios []*ScenarioReport `json:"scenarios"`
}

// GeneratorInfo describes the generating process.
type GeneratorInfo struct {
	GOMAXPROCS     int     `json:"gomaxprocs"`
	CPUBudget      float64 `json:"cpu_budget_cores"`
	OpenFilesLimit uint64  `json:"open_files_limit"`
	Seed           uint64  `json:"seed"`
}

// ScenarioReport is one scenario's result.
type ScenarioReport struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Model       string   `json:"model"` // open | closed
	DurationS   float64  `json:"duration_s"`
	Requests    int64    `json:"requests"` // finished requests, errors included
	Errors      int64    `json:"errors"`
	ErrorRate   float64  `json:"error_rate"` // 0..1
	RPS         float64  `json:"rps"`        // successful responses per second
	OfferedRPS  *float64 `json:"offered_rps,omitempty"`
	CapacityRPS *float64 `json:"capacity_rps,omitempty"`
	// LatencyMs is measured from the intended send time in the open model
	// and from the flush of the request in the closed model.
	LatencyMs     Latency  `json:"latency_ms"`
	ServiceTimeMs *Latency `json:"service_time_ms,omitempty"` // open model: from the actual send
	// ByOutcome splits the latency between successes and 503s.
	ByOutcome     ByOutcome        `json:"latency_by_outcome"`
	SendLag       *SendLag         `json:"send_lag,omitempty"`
	Connections   Connections      `json:"connections"`
	ErrorsByClass map[string]int64 `json:"errors_by_class"`
	StatusCodes   map[string]int64 `json:"status_codes"`
	Operations    []OpReport       `json:"operations"`
	// Targets is each target's share, when the run spread its connections
	// over several (parley load --target A,B): connection i went to target
	// i mod n. Sends the open model never made belong to no target.
	Targets       []TargetReport    `json:"targets,omitempty"`
	Thresholds    []ThresholdResult `json:"thresholds"`
	Passed        bool              `json:"passed"`
	GeneratorLoad GeneratorLoad     `json:"generator"`
	Warnings      []string          `json:"warnings,omitempty"`
	Setup         *SetupInfo        `json:"setup,omitempty"`
	Stages        []StageMark       `json:"stages"`
	Timeline      []Interval        `json:"timeline"`
	Steps         []FindMaxStep     `json:"steps,omitempty"`
}

// ByOutcome is the latency of the successful responses (1xx–3xx) and the
// time of the 503 answers apart (the 503s from the actual send in the open
// model): under overload, what the admitted requests saw and how fast the
// server told the refused ones.
type ByOutcome struct {
	Success     Latency `json:"success_ms"`
	Unavailable Latency `json:"status_503_ms"`
	// Status503NoRetryAfter counts the 503 answers without Retry-After.
	Status503NoRetryAfter int64 `json:"status_503_without_retry_after"`
	// SuccessWithin counts the successes answered within each of a few
	// latency bounds ("350ms": …): the goodput under an SLO is the count
	// within the SLO's bound divided by the duration.
	SuccessWithin map[string]int64 `json:"success_within"`
}

// goodputBounds are the latency bounds of ByOutcome.SuccessWithin: the
// scenarios' SLOs and a few around them.
var goodputBounds = []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, 300 * time.Millisecond,
	350 * time.Millisecond, 500 * time.Millisecond, time.Second}

// countWithin counts the values of h at most each bound.
func countWithin(h *hdrhistogram.Histogram) map[string]int64 {
	out := make(map[string]int64, len(goodputBounds))
	bars := h.Distribution()
	for _, b := range goodputBounds {
		limit, n := b.Microseconds(), int64(0)
		for _, bar := range bars {
			if bar.Count > 0 && bar.To <= limit {
				n += bar.Count
			}
		}
		out[b.String()] = n
	}
	return out
}

// SendLag is how late the open model's sends went out.
type SendLag struct {
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	Max        float64 `json:"max_ms"`
	Late       int64   `json:"late"`                    // sends that started more than 10 ms after their intended time
	LateBusy   int64   `json:"late_no_free_connection"` // of those, the ones that waited for a free connection
	Dropped    int64   `json:"dropped"`                 // intended sends never made (counted as errors)
	Offered    int64   `json:"offered"`                 // intended sends
	SchedP99   float64 `json:"scheduler_p99_ms"`
	SchedMaxMs float64 `json:"scheduler_max_ms"`
}

// Connections compares what was asked for with what the server accepted.
type Connections struct {
	Requested   int   `json:"requested"`
	Established int64 `json:"established"` // most open at once
	Failed      int64 `json:"failed"`      // failed dials
	Reconnects  int64 `json:"reconnects"`  // keep-alive connections the server closed, redialled
	Pipelining  int   `json:"pipelining,omitempty"`
}

// OpReport is one operation's share of a scenario.
type OpReport struct {
	Name          string           `json:"name"`
	Requests      int64            `json:"requests"`
	Errors        int64            `json:"errors"`
	ErrorRate     float64          `json:"error_rate"`
	RPS           float64          `json:"rps"`
	LatencyMs     Latency          `json:"latency_ms"`
	ErrorsByClass map[string]int64 `json:"errors_by_class,omitempty"`
}

// TargetReport is one target's share of a scenario: what its connections
// sent and got back.
type TargetReport struct {
	Target        string           `json:"target"`      // host:port
	Connections   int64            `json:"connections"` // most established at once
	Requests      int64            `json:"requests"`
	Errors        int64            `json:"errors"`
	ErrorRate     float64          `json:"error_rate"`
	RPS           float64          `json:"rps"`
	LatencyMs     Latency          `json:"latency_ms"`
	ErrorsByClass map[string]int64 `json:"errors_by_class,omitempty"`
}

// GeneratorLoad is the generator's own CPU use during the timed part, and
// whether it (rather than the server) was the bottleneck.
type GeneratorLoad struct {
	CPUSeconds    float64 `json:"cpu_seconds"`
	CPUPercent    float64 `json:"cpu_percent"`     // mean, percent of one core
	CPUPercentMax float64 `json:"cpu_percent_max"` // busiest second
	BudgetCores   float64 `json:"budget_cores"`
	Bound         bool    `json:"bound"`
}

// buildScenarioReport turns a run's recorder into the report and checks
// the gates.
func buildScenarioReport(name string, p *plan, res runResult, gates []Threshold, o *Options) *ScenarioReport {
	rec := res.rec
	overall, _ := rec.overall(res.elapsed)
	sr := &ScenarioReport{
		Name:          name,
		Model:         "closed",
		DurationS:     round3(res.secs),
		Requests:      overall.Requests,
		Errors:        overall.Errors,
		ErrorRate:     overall.ErrorRate,
		RPS:           overall.RPS,
		LatencyMs:     overall.Latency,
		ErrorsByClass: overall.Classes,
		StatusCodes:   rec.statusCounts(),
		Connections: Connections{Requested: res.requested, Established: res.peak, Failed: res.dialFails,
			Reconnects: res.reconnects},
		Stages:   res.marks,
		Timeline: rec.timeline,
		ByOutcome: ByOutcome{Success: latencyOf(rec.outcomes.ok), Unavailable: latencyOf(rec.outcomes.unavailable),
			Status503NoRetryAfter: rec.outcomes.noRetryAfter, SuccessWithin: countWithin(rec.outcomes.ok)},
	}
	if !res.open {
		sr.Connections.Pipelining = p.pipelining
	}
	opTotals := map[string]Totals{}
	for i, op := range rec.ops {
		t := rec.opTotals(i, res.elapsed)
		opTotals[op] = t
		sr.Operations = append(sr.Operations, OpReport{Name: op, Requests: t.Requests, Errors: t.Errors,
			ErrorRate: t.ErrorRate, RPS: t.RPS, LatencyMs: t.Latency, ErrorsByClass: t.Classes})
	}
	if rec.ntgt > 1 {
		for i := range rec.ntgt {
			t := rec.targetTotals(i, res.elapsed)
			tr := TargetReport{Target: fmt.Sprint("target ", i+1), Requests: t.Requests, Errors: t.Errors,
				ErrorRate: t.ErrorRate, RPS: t.RPS, LatencyMs: t.Latency, ErrorsByClass: t.Classes}
			if i < len(o.hosts) {
				tr.Target = o.hosts[i]
			}
			if i < len(res.peakPer) {
				tr.Connections = res.peakPer[i]
			}
			sr.Targets = append(sr.Targets, tr)
		}
	}
	if res.open {
		sr.Model = "open"
		offered := round1(float64(res.offered) / res.secs)
		sr.OfferedRPS = &offered
		svc := latencyOf(rec.service)
		sr.ServiceTimeMs = &svc
		lag := latencyOf(rec.lag)
		sr.SendLag = &SendLag{P50: lag.P50, P99: lag.P99, Max: lag.Max, Late: rec.late, LateBusy: rec.lateBusy, Dropped: res.dropped,
			Offered: res.offered, SchedP99: res.schedLag.P99, SchedMaxMs: res.schedLag.Max}
	}
	// Generator CPU.
	budget := o.CPUBudget
	gl := GeneratorLoad{CPUSeconds: round3(res.cpuSecs), BudgetCores: budget}
	if res.elapsed > 0 {
		gl.CPUPercent = round1(100 * res.cpuSecs / res.elapsed)
	}
	hot := 0
	for _, iv := range rec.timeline {
		gl.CPUPercentMax = max(gl.CPUPercentMax, iv.CPUPercent)
		if iv.CPUPercent > 90*budget {
			hot++
		}
	}
	if gl.CPUPercent > 90*budget || hot >= 3 {
		gl.Bound = true
		sr.Warnings = append(sr.Warnings, fmt.Sprintf(
			"GENERATOR BOTTLENECK: the generator used %.0f%% of one core on average (busiest second %.0f%%) against a budget of %g cores: it, not the server, may be limiting these numbers",
			gl.CPUPercent, gl.CPUPercentMax, budget))
	}
	lagLimit := 10.0
	if o.SchedulerLagLimit > 0 {
		lagLimit = float64(o.SchedulerLagLimit) / float64(time.Millisecond)
	}
	if res.open && res.schedLag.P99 > lagLimit {
		// The scheduler ran late. If the generator was busy, it is the
		// bottleneck; if not, the machine is (the server sharing its cores).
		if gl.CPUPercent > 50*budget {
			gl.Bound = true
			sr.Warnings = append(sr.Warnings, fmt.Sprintf(
				"GENERATOR BOTTLENECK: the generator's scheduler ran behind its own schedule (p99 %s, max %s) at %.0f%% CPU: the offered rate was not offered on time",
				fmtMs(res.schedLag.P99), fmtMs(res.schedLag.Max), gl.CPUPercent))
		} else {
			sr.Warnings = append(sr.Warnings, fmt.Sprintf(
				"the generator's scheduler ran behind its schedule (p99 %s, max %s) while the generator used only %.0f%% CPU: the machine is saturated (does the server share its cores?); the lateness counts in the latencies",
				fmtMs(res.schedLag.P99), fmtMs(res.schedLag.Max), gl.CPUPercent))
		}
	}
	sr.GeneratorLoad = gl
	if res.open && sr.SendLag.Late > 0 {
		sl := sr.SendLag
		msg := fmt.Sprintf("%d of %d sends (%.2f%%) went out more than 10 ms after their intended time (send lag p99 %s, max %s); their latency still counts from the intended time.",
			sl.Late, res.offered, 100*float64(sl.Late)/float64(max(1, res.offered)), fmtMs(sl.P99), fmtMs(sl.Max))
		if sl.LateBusy > 0 {
			msg += fmt.Sprintf(" %d of them waited for a free connection (every held connection busy: add connections if the server is not the bottleneck).", sl.LateBusy)
		}
		if rest := sl.Late - sl.LateBusy; rest > 0 {
			msg += fmt.Sprintf(" %d were delayed inside the generator (CPU, scheduling or GC).", rest)
		}
		sr.Warnings = append(sr.Warnings, msg)
	}
	if res.open && res.dropped > 0 {
		sr.Warnings = append(sr.Warnings, fmt.Sprintf(
			"%d intended sends were dropped (never sent: more than the request timeout behind schedule, or still queued at the end); they count as errors", res.dropped))
	}
	if res.peak < int64(res.requested) {
		sr.Warnings = append(sr.Warnings, fmt.Sprintf("only %d of %d requested connections were established at once (%d dials failed)",
			res.peak, res.requested, res.dialFails))
	}
	sr.Thresholds = evalThresholds(gates, name, overall, opTotals)
	if sr.Thresholds == nil {
		sr.Thresholds = []ThresholdResult{} // JSON: [] rather than null
	}
	if sr.Stages == nil {
		sr.Stages = []StageMark{}
	}
	if sr.Timeline == nil {
		sr.Timeline = []Interval{}
	}
	sr.Passed = true
	for _, t := range sr.Thresholds {
		sr.Passed = sr.Passed && t.OK
	}
	return sr
}

func (r *Report) finish() {
	r.Passed = len(r.Scenarios) > 0
	for _, s := range r.Scenarios {
		r.Passed = r.Passed && s.Passed
	}
}

// FailedThresholds lists "scenario: expr (actual)" for every failed gate.
func (r *Report) FailedThresholds() []string {
	var out []string
	for _, s := range r.Scenarios {
		for _, t := range s.Thresholds {
			if !t.OK {
				out = append(out, fmt.Sprintf("%s: %s (actual %s)", s.Name, t.Expr, fmtActual(t)))
			}
		}
		if s.CapacityRPS != nil && !s.Passed && len(s.Thresholds) == 0 {
			out = append(out, s.Name+": no step met the SLOs")
		}
	}
	return out
}

func fmtActual(t ThresholdResult) string {
	th, err := ParseThreshold(t.Expr)
	if err != nil {
		return fmt.Sprint(t.Actual)
	}
	switch {
	case latencyMetrics[th.Metric] != nil:
		return fmtMs(t.Actual)
	case th.Metric == "error_rate":
		return fmt.Sprintf("%.3g%%", 100*t.Actual)
	case th.Metric == "rps":
		return fmt.Sprintf("%.1f/s", t.Actual)
	}
	return fmt.Sprintf("%g", t.Actual)
}

func fmtMs(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0fms", v)
	default:
		return fmt.Sprintf("%.2fms", v)
	}
}

// WriteText writes the human summary.
func (r *Report) WriteText(w io.Writer) {
	for _, s := range r.Scenarios {
		s.writeText(w)
	}
	verdict := "PASSED"
	if !r.Passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "\nresult: %s (%d scenario(s) against %s)\n", verdict, len(r.Scenarios), r.Target)
}

func (s *ScenarioReport) writeText(w io.Writer) {
	model := "open model (latency from the intended send time)"
	if s.Model == "closed" {
		model = fmt.Sprintf("closed model, pipelining %d", s.Connections.Pipelining)
	}
	fmt.Fprintf(w, "\n== %s: %s, %s ==\n", s.Name, model, time.Duration(s.DurationS*float64(time.Second)).Round(time.Millisecond))
	if s.Setup != nil {
		fmt.Fprintf(w, "setup        %d users, %d conversations, %d messages in %.1fs\n",
			s.Setup.Users, s.Setup.Conversations, s.Setup.Messages, s.Setup.Seconds)
	}
	line := fmt.Sprintf("requests     %d, %.1f successful/s", s.Requests, s.RPS)
	if s.OfferedRPS != nil {
		line += fmt.Sprintf(" (offered %.1f/s)", *s.OfferedRPS)
	}
	if s.CapacityRPS != nil {
		line += fmt.Sprintf("; capacity %.1f req/s within the SLOs", *s.CapacityRPS)
	}
	fmt.Fprintln(w, line)
	fmt.Fprintf(w, "errors       %d (%.3g%%)%s\n", s.Errors, 100*s.ErrorRate, fmtClasses(s.ErrorsByClass))
	fmt.Fprintf(w, "latency      %s\n", fmtLatency(s.LatencyMs))
	if s.ServiceTimeMs != nil {
		fmt.Fprintf(w, "service time %s (from the actual send)\n", fmtLatency(*s.ServiceTimeMs))
	}
	if n := s.StatusCodes["503"]; n > 0 {
		fmt.Fprintf(w, "successes    %s\n", fmtLatency(s.ByOutcome.Success))
		fmt.Fprintf(w, "503 answers  %s; %d of %d without Retry-After\n", fmtLatency(s.ByOutcome.Unavailable), s.ByOutcome.Status503NoRetryAfter, n)
	}
	if s.SendLag != nil {
		fmt.Fprintf(w, "send lag     p50 %s p99 %s max %s; late %d (%d waiting for a connection), dropped %d of %d offered; scheduler p99 %s\n",
			fmtMs(s.SendLag.P50), fmtMs(s.SendLag.P99), fmtMs(s.SendLag.Max), s.SendLag.Late, s.SendLag.LateBusy, s.SendLag.Dropped,
			s.SendLag.Offered, fmtMs(s.SendLag.SchedP99))
	}
	fmt.Fprintf(w, "connections  requested %d, established %d (failed dials %d, reconnects %d)\n",
		s.Connections.Requested, s.Connections.Established, s.Connections.Failed, s.Connections.Reconnects)
	if len(s.StatusCodes) > 0 {
		keys := make([]string, 0, len(s.StatusCodes))
		for k := range s.StatusCodes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s×%d", k, s.StatusCodes[k]))
		}
		fmt.Fprintf(w, "statuses     %s\n", strings.Join(parts, " "))
	}
	if len(s.Operations) > 1 {
		fmt.Fprintln(w, "operations")
		for _, op := range s.Operations {
			fmt.Fprintf(w, "  %-18s %8d req %8.1f/s  errors %d  %s\n", op.Name, op.Requests, op.RPS, op.Errors, fmtLatency(op.LatencyMs))
		}
	}
	if len(s.Targets) > 0 {
		fmt.Fprintln(w, "targets")
		for _, t := range s.Targets {
			fmt.Fprintf(w, "  %-21s %8d req %8.1f/s  errors %d  %s  (%d conns)\n", t.Target, t.Requests, t.RPS, t.Errors, fmtLatency(t.LatencyMs), t.Connections)
		}
	}
	g := s.GeneratorLoad
	fmt.Fprintf(w, "generator    cpu %.0f%% of one core on average (busiest second %.0f%%), %.1f cpu-s, budget %g cores\n",
		g.CPUPercent, g.CPUPercentMax, g.CPUSeconds, g.BudgetCores)
	for _, st := range s.Steps {
		mark := "pass"
		if !st.Passed {
			mark = "FAIL " + strings.Join(st.Failed, ", ")
		}
		fmt.Fprintf(w, "  step %8.1f req/s offered: %8.1f/s served, p95 %s, p99 %s, errors %.3g%%: %s\n",
			st.OfferedRPS, st.RPS, fmtMs(st.P95), fmtMs(st.P99), 100*st.ErrorRate, mark)
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(w, "WARNING      %s\n", warn)
	}
	if len(s.Thresholds) > 0 {
		fmt.Fprintln(w, "thresholds")
		for _, t := range s.Thresholds {
			mark := "ok  "
			if !t.OK {
				mark = "FAIL"
			}
			src := ""
			if t.Source != "" {
				src = " [" + t.Source + "]"
			}
			fmt.Fprintf(w, "  %s %s (actual %s)%s\n", mark, t.Expr, fmtActual(t), src)
		}
	}
	verdict := "passed"
	if !s.Passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "scenario %s %s\n", s.Name, verdict)
}

func fmtLatency(l Latency) string {
	return fmt.Sprintf("p50 %s  p90 %s  p95 %s  p99 %s  max %s", fmtMs(l.P50), fmtMs(l.P90), fmtMs(l.P95), fmtMs(l.P99), fmtMs(l.Max))
}

func fmtClasses(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return ": " + strings.Join(parts, ", ")
}

// hostOnly returns the host:port of a URL (reports never carry the scheme).
func hostOnly(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return u.Host
	}
	return raw
}

// progressPrinter returns the live progress line writer of one scenario.
func progressPrinter(w io.Writer, name string, open bool) func(progressInfo) {
	return func(p progressInfo) {
		iv := p.iv
		rate := fmt.Sprintf("%7.1f req/s", iv.RPS)
		if open {
			rate += fmt.Sprintf(" (offered %.1f)", iv.OfferedRPS)
		}
		lag := ""
		if open {
			lag = " | send lag p99 " + fmtMs(iv.SendLagP99)
		}
		fmt.Fprintf(w, "[%s] %s/%s | %s | p50 %s p90 %s p99 %s max %s | errors %d | conns %d/%d | cpu %.0f%%%s\n",
			name, fmtClock(p.elapsed), fmtClock(p.total), rate, fmtMs(iv.P50), fmtMs(iv.P90), fmtMs(iv.P99), fmtMs(iv.Max),
			iv.Errors, iv.Connections, p.requested, iv.CPUPercent, lag)
	}
}

func fmtClock(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%02d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}
