package loadgen

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Stage is one step of a load profile. Over Duration, the number of
// connections and the arrival rate move linearly from the previous stage's
// values to this stage's; the first stage holds its own values from the
// start (a zero-Duration first stage only sets the starting values). A
// negative Connections or Rate keeps the previous stage's value.
type Stage struct {
	Duration    time.Duration `json:"duration"`
	Connections int           `json:"connections"`
	Rate        float64       `json:"rate"`
}

// profile is a resolved list of stages: every stage has concrete values.
type profile struct {
	stages     []Stage
	startConns int
	startRate  float64
	total      time.Duration
}

// newProfile resolves stages. defConns/defRate fill values the first stage
// leaves unset.
func newProfile(stages []Stage, defConns int, defRate float64) (*profile, error) {
	if len(stages) == 0 {
		return nil, fmt.Errorf("no stages")
	}
	p := &profile{}
	conns, rate := defConns, defRate
	for i, s := range stages {
		if s.Duration < 0 {
			return nil, fmt.Errorf("stage %d: negative duration", i+1)
		}
		if s.Connections >= 0 {
			conns = s.Connections
		}
		if s.Rate >= 0 {
			rate = s.Rate
		}
		if i == 0 {
			p.startConns, p.startRate = conns, rate
		}
		p.stages = append(p.stages, Stage{Duration: s.Duration, Connections: conns, Rate: rate})
		p.total += s.Duration
	}
	if p.total <= 0 {
		return nil, fmt.Errorf("stages last no time")
	}
	return p, nil
}

// constantProfile is one stage holding conns and rate for d.
func constantProfile(d time.Duration, conns int, rate float64) *profile {
	p, _ := newProfile([]Stage{{Duration: d, Connections: conns, Rate: rate}}, conns, rate)
	return p
}

// at returns the stage index and the interpolated connections and rate at t.
func (p *profile) at(t time.Duration) (stage int, conns float64, rate float64) {
	fromC, fromR := float64(p.startConns), p.startRate
	var elapsed time.Duration
	for i, s := range p.stages {
		if t < elapsed+s.Duration || i == len(p.stages)-1 {
			f := 1.0
			if s.Duration > 0 {
				f = float64(t-elapsed) / float64(s.Duration)
			}
			f = math.Max(0, math.Min(1, f))
			return i, fromC + f*(float64(s.Connections)-fromC), fromR + f*(s.Rate-fromR)
		}
		elapsed += s.Duration
		fromC, fromR = float64(s.Connections), s.Rate
	}
	return len(p.stages) - 1, fromC, fromR
}

func (p *profile) connsAt(t time.Duration) int {
	_, c, _ := p.at(t)
	return int(math.Round(c))
}

func (p *profile) rateAt(t time.Duration) float64 {
	_, _, r := p.at(t)
	return r
}

func (p *profile) stageAt(t time.Duration) int {
	s, _, _ := p.at(t)
	return s
}

func (p *profile) maxConns() int {
	m := p.startConns
	for _, s := range p.stages {
		m = max(m, s.Connections)
	}
	return m
}

// meanRate is the number of intended requests divided by the duration.
func (p *profile) meanRate() float64 {
	var area float64
	fromR := p.startRate
	for _, s := range p.stages {
		area += s.Duration.Seconds() * (fromR + s.Rate) / 2
		fromR = s.Rate
	}
	return area / p.total.Seconds()
}

// scaled multiplies connections, rate and durations.
func (p *profile) scaled(connF, rateF, timeF float64) *profile {
	q := &profile{startConns: scaleInt(p.startConns, connF), startRate: p.startRate * rateF}
	for _, s := range p.stages {
		d := time.Duration(float64(s.Duration) * timeF)
		q.stages = append(q.stages, Stage{Duration: d, Connections: scaleInt(s.Connections, connF), Rate: s.Rate * rateF})
		q.total += d
	}
	return q
}

func scaleInt(n int, f float64) int {
	if n == 0 {
		return 0
	}
	return max(1, int(math.Round(float64(n)*f)))
}

// StageMark is a stage boundary, for the reports.
type StageMark struct {
	Index       int     `json:"index"`
	Start       float64 `json:"start_s"`
	End         float64 `json:"end_s"`
	Connections int     `json:"connections"`
	Rate        float64 `json:"rate,omitempty"`
}

func (p *profile) marks(open bool) []StageMark {
	var out []StageMark
	var t time.Duration
	for i, s := range p.stages {
		m := StageMark{Index: i, Start: t.Seconds(), End: (t + s.Duration).Seconds(), Connections: s.Connections}
		if open {
			m.Rate = round1(s.Rate)
		}
		out = append(out, m)
		t += s.Duration
	}
	return out
}

// ParseStage parses a --stage value: "DURATION[,conns=N][,rate=R]", e.g.
// "1m,conns=10000,rate=400". An omitted value keeps the previous stage's.
func ParseStage(s string) (Stage, error) {
	parts := strings.Split(s, ",")
	d, err := time.ParseDuration(strings.TrimSpace(parts[0]))
	if err != nil {
		return Stage{}, fmt.Errorf("stage %q: duration: %w", s, err)
	}
	if d < 0 {
		return Stage{}, fmt.Errorf("stage %q: negative duration", s)
	}
	st := Stage{Duration: d, Connections: -1, Rate: -1}
	for _, kv := range parts[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return Stage{}, fmt.Errorf("stage %q: %q is not key=value", s, kv)
		}
		switch strings.ToLower(k) {
		case "conns", "connections", "c":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return Stage{}, fmt.Errorf("stage %q: bad connections %q", s, v)
			}
			st.Connections = n
		case "rate", "r", "rps":
			r, err := strconv.ParseFloat(strings.TrimSuffix(v, "/s"), 64)
			if err != nil || r < 0 || math.IsNaN(r) || math.IsInf(r, 0) {
				return Stage{}, fmt.Errorf("stage %q: bad rate %q", s, v)
			}
			st.Rate = r
		default:
			return Stage{}, fmt.Errorf("stage %q: unknown key %q (want conns or rate)", s, k)
		}
	}
	return st, nil
}

// advance returns the time after t by which need more requests are due
// (the integral of the rate from t equals need), solved exactly on the
// piecewise-linear rate; ok is false when the profile ends first.
func (p *profile) advance(t time.Duration, need float64) (time.Duration, bool) {
	fromR := p.startRate
	var s0 time.Duration
	for _, s := range p.stages {
		s1 := s0 + s.Duration
		if t < s1 && s.Duration > 0 {
			slope := (s.Rate - fromR) / s.Duration.Seconds() // per second²
			a := fromR + slope*(t-s0).Seconds()              // rate at t
			rem := (s1 - t).Seconds()
			if area := a*rem + slope*rem*rem/2; need <= area {
				// a·Δ + slope·Δ²/2 = need, in a form stable for slope ≈ 0.
				d := 2 * need / (a + math.Sqrt(math.Max(0, a*a+2*slope*need)))
				return t + time.Duration(d*float64(time.Second)), true
			} else if area > 0 {
				need -= area
			}
			t = s1
		}
		s0 = s1
		fromR = s.Rate
	}
	return p.total, false
}
