package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Result is one scenario's outcome, as `parley chaos --json` writes it.
type Result struct {
	Name      string    `json:"name"`
	Passed    bool      `json:"passed"`
	Short     bool      `json:"short"`
	StartedAt time.Time `json:"started_at"`
	// LoadAvg is the machine's 1-minute load average at the scenario's
	// start and end (other work may share the machine).
	LoadAvg [2]float64 `json:"load_avg"`

	AttemptedWrites  int `json:"attempted_writes"`
	AckedWrites      int `json:"acked_writes"`
	LostWrites       int `json:"lost_writes"`
	DuplicatedWrites int `json:"duplicated_writes"`
	UnexpectedWrites int `json:"unexpected_writes"`
	// RecoveredWrites committed although their client never got an
	// acknowledgement (Jepsen's "info" ops that happened); InDoubtWrites
	// were still unacknowledged when the clients gave up retrying.
	RecoveredWrites  int            `json:"recovered_writes"`
	InDoubtWrites    int            `json:"in_doubt_writes"`
	FailedWrites     int            `json:"failed_writes"`
	OrderViolations  int            `json:"order_violations"`
	RYWChecks        int            `json:"ryw_checks"`
	RYWViolations    int            `json:"ryw_violations"`
	StaleReads       int            `json:"stale_reads"`
	StaleBySource    map[string]int `json:"stale_reads_by_source,omitempty"`
	AbortedSends     int            `json:"aborted_sends,omitempty"`
	AbortedCommitted int            `json:"aborted_committed,omitempty"`
	AbortViolations  int            `json:"abort_violations,omitempty"`

	Phases map[string]*PhaseStats `json:"phases"`
	// DetectS is how long after the fault began the system showed it (a
	// breaker open, the cache down, the first fast 503); RecoverS how long
	// after the fault was healed (or PostgreSQL/PgBouncer accepted
	// connections again) it was back to normal. Null when not measured.
	DetectS  *float64           `json:"detect_s"`
	RecoverS *float64           `json:"recover_s"`
	Marks    map[string]float64 `json:"marks_s"` // events, seconds after the fault began
	Targets  []Target           `json:"targets"`
	Notes    []string           `json:"notes,omitempty"`
	Examples []string           `json:"examples,omitempty"`
	// Slowest are the five slowest requests (kind, instance, outcome, start
	// after the fault began, duration).
	Slowest []string `json:"slowest,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// PhaseStats are the workload's requests of one phase.
type PhaseStats struct {
	Requests int            `json:"requests"`
	Errors   int            `json:"errors"`
	ByClass  map[string]int `json:"errors_by_class"`
	P50ms    float64        `json:"p50_ms"`
	P95ms    float64        `json:"p95_ms"`
	P99ms    float64        `json:"p99_ms"`
	MaxMs    float64        `json:"max_ms"`
	SendP95  float64        `json:"send_p95_ms"`
	ReadP95  float64        `json:"read_p95_ms"`
	Sources  map[string]int `json:"read_sources"`
	Seconds  float64        `json:"seconds"`
}

// Target is one of a scenario's targets and what was measured.
type Target struct {
	Name     string `json:"name"`
	Want     string `json:"want"`
	Measured string `json:"measured"`
	Passed   bool   `json:"passed"`
	Note     string `json:"note,omitempty"`
	// Correctness marks the targets about what the system promises
	// whatever the machine's speed: no acknowledged write lost,
	// duplicated, reordered or invented, read-your-writes, no stale read
	// from the cache or the primary. The others (success rates, latency,
	// times to detect and recover) also measure the machine.
	Correctness bool `json:"correctness"`
}

// PassedCorrectness reports whether the scenario ran and met every
// correctness target (make test's gate: `parley chaos --gate correctness`).
func (r Result) PassedCorrectness() bool {
	if r.Error != "" {
		return false
	}
	for _, t := range r.Targets {
		if t.Correctness && !t.Passed {
			return false
		}
	}
	return true
}

// phaseOf names the phase of a request that began at t.
func phaseOf(t, fault, heal time.Time) string {
	switch {
	case t.Before(fault):
		return "before"
	case t.Before(heal):
		return "fault"
	}
	return "after"
}

// phaseStats summarises ops by phase (drain ops, the retries made after
// the after phase, are left out; hang-ups on purpose are not errors).
func phaseStats(ops []op, fault, heal, end time.Time) map[string]*PhaseStats {
	out := map[string]*PhaseStats{}
	lat := map[string][]float64{}
	sendLat := map[string][]float64{}
	readLat := map[string][]float64{}
	for _, name := range []string{"before", "fault", "after"} {
		out[name] = &PhaseStats{ByClass: map[string]int{}, Sources: map[string]int{}}
	}
	for _, o := range ops {
		if o.Drain || o.Class == "aborted" {
			continue
		}
		p := phaseOf(o.Start, fault, heal)
		st := out[p]
		st.Requests++
		if o.Class != "ok" {
			st.Errors++
			st.ByClass[o.Class]++
		}
		ms := float64(o.End.Sub(o.Start).Microseconds()) / 1000
		lat[p] = append(lat[p], ms)
		if o.Kind == "send" || o.Kind == "ping" {
			sendLat[p] = append(sendLat[p], ms)
		} else {
			readLat[p] = append(readLat[p], ms)
			if o.Class == "ok" && o.Source != "" {
				st.Sources[o.Source]++
			}
		}
	}
	bounds := map[string][2]time.Time{"before": {{}, fault}, "fault": {fault, heal}, "after": {heal, end}}
	for p, st := range out {
		st.P50ms, st.P95ms, st.P99ms = pct(lat[p], 50), pct(lat[p], 95), pct(lat[p], 99)
		st.MaxMs = pct(lat[p], 100)
		st.SendP95, st.ReadP95 = pct(sendLat[p], 95), pct(readLat[p], 95)
		if b := bounds[p]; !b[0].IsZero() && b[1].After(b[0]) {
			st.Seconds = round3(b[1].Sub(b[0]).Seconds())
		}
	}
	return out
}

// slowest describes the n slowest requests of ops.
func slowest(ops []op, fault time.Time, n int) []string {
	s := make([]op, 0, len(ops))
	for _, o := range ops {
		if !o.Drain && o.Class != "aborted" {
			s = append(s, o)
		}
	}
	sort.Slice(s, func(i, j int) bool { return s[i].End.Sub(s[i].Start) > s[j].End.Sub(s[j].Start) })
	var out []string
	for _, o := range s[:min(n, len(s))] {
		out = append(out, fmt.Sprintf("%s on instance %d: %s (HTTP %d) at %+.3f s, %.0f ms",
			o.Kind, o.Inst, o.Class, o.Status, o.Start.Sub(fault).Seconds(), float64(o.End.Sub(o.Start).Microseconds())/1000))
	}
	return out
}

// pct is the p-th percentile (nearest rank) of xs, rounded to µs; 0 when
// empty.
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return round3(s[max(0, min(i, len(s)-1))])
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

func secs(d time.Duration) *float64 {
	v := round3(d.Seconds())
	return &v
}

// loadAvg is the 1-minute load average (0 when unknown).
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}

// WriteJSON writes the results as a JSON array, one object per scenario.
func WriteJSON(path string, rs []Result) error {
	b, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// PrintTable writes the results as a Markdown table (and each scenario's
// targets), the form docs/testing.md shows.
func PrintTable(w io.Writer, rs []Result) {
	fmt.Fprintln(w, "| scenario | passed | load avg | acked / lost / dup | RYW checks / violations | stale reads | phase: requests, errors, p50 / p95 / p99 ms | detect | recover |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		var ph []string
		for _, p := range []string{"before", "fault", "after"} {
			if st := r.Phases[p]; st != nil {
				ph = append(ph, fmt.Sprintf("%s: %d, %d, %s / %s / %s", p, st.Requests, st.Errors, fmtMs(st.P50ms), fmtMs(st.P95ms), fmtMs(st.P99ms)))
			}
		}
		pass := "yes"
		if !r.Passed {
			pass = "**no**"
		}
		fmt.Fprintf(w, "| `%s` | %s | %.1f–%.1f | %d / %d / %d | %d / %d | %d | %s | %s | %s |\n",
			r.Name, pass, r.LoadAvg[0], r.LoadAvg[1], r.AckedWrites, r.LostWrites, r.DuplicatedWrites,
			r.RYWChecks, r.RYWViolations, r.StaleReads, strings.Join(ph, "<br>"), fmtS(r.DetectS), fmtS(r.RecoverS))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | target | want | measured | met |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, r := range rs {
		for _, t := range r.Targets {
			met := "yes"
			if !t.Passed {
				met = "**no**"
			}
			m := t.Measured
			if t.Note != "" {
				m += " (" + t.Note + ")"
			}
			fmt.Fprintf(w, "| `%s` | %s | %s | %s | %s |\n", r.Name, t.Name, t.Want, m, met)
		}
	}
}

func fmtMs(ms float64) string {
	switch {
	case ms >= 100:
		return strconv.FormatFloat(ms, 'f', 0, 64)
	case ms >= 10:
		return strconv.FormatFloat(ms, 'f', 1, 64)
	}
	return strconv.FormatFloat(ms, 'f', 2, 64)
}

func fmtS(s *float64) string {
	if s == nil {
		return "—"
	}
	return strconv.FormatFloat(*s, 'f', 2, 64) + " s"
}
