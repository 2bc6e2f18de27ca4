package loadgen

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Scenario describes a workload: the mix of operations, the load (held
// connections and arrival rate, or stages of both), the data to create first
// and the SLO thresholds. The built-in ones follow the seed's load-test plan.
type Scenario struct {
	Name        string             `json:"name" yaml:"name"`
	Description string             `json:"description,omitempty" yaml:"description"`
	Mix         map[string]float64 `json:"mix" yaml:"mix"`
	Connections int                `json:"connections" yaml:"connections"`
	Pipelining  int                `json:"pipelining,omitempty" yaml:"pipelining"` // closed model (--closed) only
	Rate        float64            `json:"rate" yaml:"rate"`                       // requests per second (open model)
	Duration    time.Duration      `json:"duration" yaml:"duration"`
	Stages      []Stage            `json:"stages,omitempty" yaml:"stages"`
	Thresholds  []string           `json:"thresholds,omitempty" yaml:"thresholds"`
	Data        DataSize           `json:"data" yaml:"data"`
	// ClosedRPS is the seed's throughput target, the default rps gate of a
	// closed-model run (in the open model the gate is 90% of the offered rate).
	ClosedRPS float64 `json:"closed_rps,omitempty" yaml:"closed_rps"`
}

// The seed's plan: 5 minutes each; history and send at 5k connections,
// mixed at 8k, spike 5k → 10k. Rates are sized for a 2-core machine running
// both the server and the databases; raise them with --rate on bigger ones.
var (
	defaultData = DataSize{Users: 500, Conversations: 200, Messages: 5000}
	mixedMix    = map[string]float64{OpHistory: 45, OpHistoryDeep: 5, OpConversationList: 12, OpUnread: 8, OpSend: 30}
)

// BuiltinScenarios returns the built-in scenarios by name.
func BuiltinScenarios() map[string]Scenario {
	return map[string]Scenario{
		"history": {
			Name:        "history",
			Description: "history pages with real cursors (newest page, then older pages; some chains start deep in the history); 5k connections held; p95 ≤ 350 ms",
			Mix:         map[string]float64{OpHistory: 85, OpHistoryDeep: 15},
			Connections: 5000, Pipelining: 10, Rate: 300, Duration: 5 * time.Minute,
			Thresholds: []string{"p95<350ms", "error_rate<1%"},
			Data:       defaultData, ClosedRPS: 100,
		},
		"send": {
			Name:        "send",
			Description: "message sends, each with a unique Idempotency-Key, into Zipf-popular conversations; 5k connections held; p95 ≤ 250 ms",
			Mix:         map[string]float64{OpSend: 100},
			Connections: 5000, Pipelining: 5, Rate: 150, Duration: 5 * time.Minute,
			Thresholds: []string{"p95<250ms", "error_rate<1%"},
			Data:       defaultData, ClosedRPS: 100,
		},
		"mixed": {
			Name:        "mixed",
			Description: "70% reads (history, deep history, conversation list, unread) / 30% sends; 8k connections held; p95 ≤ 300 ms",
			Mix:         mixedMix,
			Connections: 8000, Pipelining: 8, Rate: 250, Duration: 5 * time.Minute,
			Thresholds: []string{"p95<300ms", "error_rate<1%"},
			Data:       defaultData, ClosedRPS: 150,
		},
		"spike": {
			Name:        "spike",
			Description: "the mixed workload through a spike: 5k connections for 2m, ramp to 10k over 1m, hold 5m, ramp down over 1m (the rate follows); no errors, p95 within SLO",
			Mix:         mixedMix,
			Connections: 5000, Pipelining: 8, Rate: 200, Duration: 9 * time.Minute,
			Stages: []Stage{
				{Duration: 2 * time.Minute, Connections: 5000, Rate: 200},
				{Duration: time.Minute, Connections: 10000, Rate: 400},
				{Duration: 5 * time.Minute, Connections: 10000, Rate: 400},
				{Duration: time.Minute, Connections: 5000, Rate: 200},
			},
			Thresholds: []string{"errors<1", "p95<300ms", "history:p95<350ms", "send:p95<250ms"},
			Data:       defaultData, ClosedRPS: 150,
		},
	}
}

// allScenarios is what --scenario all runs, in order.
var allScenarios = []string{"history", "send", "mixed", "spike"}

// plan is a scenario with every override applied.
type plan struct {
	sc         Scenario
	open       bool
	prof       *profile
	pipelining int
	data       DataSize
	thresholds []Threshold
	// rpsGate: in the open model the default gate is rps ≥ 90% of the
	// offered rate (the server kept up); find-max recomputes it per step.
	rpsGate bool
}

// resolve applies the options to a scenario.
func resolve(sc Scenario, o *Options) (*plan, error) {
	scale := o.Scale
	if scale <= 0 {
		scale = 1
	}
	p := &plan{sc: sc, open: !o.Closed, pipelining: max(1, o.Pipelining)}
	if o.Pipelining == 0 && sc.Pipelining > 0 && o.Closed {
		p.pipelining = sc.Pipelining
	}
	conns := o.Connections
	if conns <= 0 {
		conns = scaleInt(sc.Connections, scale)
	}
	if conns <= 0 {
		return nil, fmt.Errorf("scenario %s: no connections", sc.Name)
	}
	rate := o.Rate
	if rate <= 0 {
		rate = sc.Rate * scale
	}
	if p.open && rate <= 0 && len(o.Stages) == 0 {
		return nil, fmt.Errorf("scenario %s: the open model needs a rate (--rate)", sc.Name)
	}
	dur := o.Duration
	if dur <= 0 {
		dur = sc.Duration
	}
	var err error
	switch {
	case len(o.Stages) > 0:
		p.prof, err = newProfile(o.Stages, conns, rate)
	case len(sc.Stages) > 0:
		base, perr := newProfile(sc.Stages, sc.Connections, sc.Rate)
		if perr != nil {
			return nil, fmt.Errorf("scenario %s: %w", sc.Name, perr)
		}
		timeF := 1.0
		if o.Duration > 0 {
			timeF = float64(o.Duration) / float64(base.total)
		}
		connF := float64(conns) / float64(max(1, base.startConns))
		rateF := 1.0
		if base.startRate > 0 {
			rateF = rate / base.startRate
		}
		p.prof = base.scaled(connF, rateF, timeF)
	default:
		if dur <= 0 {
			return nil, fmt.Errorf("scenario %s: no duration", sc.Name)
		}
		p.prof = constantProfile(dur, conns, rate)
	}
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", sc.Name, err)
	}
	if sc.Data.Users > 0 {
		p.data = sc.Data.scaled(scale)
	}
	if !o.NoDefaultThresholds {
		for _, e := range sc.Thresholds {
			th, err := ParseThreshold(e)
			if err != nil {
				return nil, fmt.Errorf("scenario %s: %w", sc.Name, err)
			}
			p.thresholds = append(p.thresholds, th)
		}
		if p.open {
			p.rpsGate = true
		} else if sc.ClosedRPS > 0 {
			th, _ := ParseThreshold(fmt.Sprintf("rps>=%g", sc.ClosedRPS))
			p.thresholds = append(p.thresholds, th)
		}
	}
	for _, e := range o.Thresholds {
		th, err := ParseThreshold(e)
		if err != nil {
			return nil, err
		}
		p.thresholds = append(p.thresholds, th)
	}
	return p, nil
}

// gates returns the thresholds of a run offering meanRate (open model).
func (p *plan) gates(meanRate float64) []Threshold {
	out := append([]Threshold(nil), p.thresholds...)
	if p.rpsGate && meanRate > 0 {
		th, _ := ParseThreshold(fmt.Sprintf("rps>=%g", math.Floor(0.9*meanRate*10)/10))
		out = append(out, th)
	}
	return out
}

// evalThresholds applies the gates to one scenario's results: unscoped
// gates and gates scoped to the scenario's name to its totals, gates scoped
// to an operation to that operation's totals (when the mix has it).
func evalThresholds(gates []Threshold, scenario string, overall Totals, ops map[string]Totals) []ThresholdResult {
	var out []ThresholdResult
	for _, th := range gates {
		switch {
		case th.Scope == "" || th.Scope == scenario:
			out = append(out, th.eval(overall))
		default:
			if t, ok := ops[th.Scope]; ok {
				r := th.eval(t)
				r.Source = "operation " + th.Scope
				out = append(out, r)
			}
		}
	}
	return out
}

// checkScopes rejects a threshold scope that names neither a scenario nor
// an operation.
func checkScopes(exprs []string, scenarios []string, ops []string) error {
	known := map[string]bool{}
	for _, s := range scenarios {
		known[s] = true
	}
	for _, s := range ops {
		known[s] = true
	}
	for _, e := range exprs {
		th, err := ParseThreshold(e)
		if err != nil {
			return err
		}
		if th.Scope != "" && !known[th.Scope] {
			names := make([]string, 0, len(known))
			for k := range known {
				names = append(names, k)
			}
			sort.Strings(names)
			return fmt.Errorf("threshold %q: scope %q is neither a scenario nor an operation (known: %s)", e, th.Scope, strings.Join(names, ", "))
		}
	}
	return nil
}
