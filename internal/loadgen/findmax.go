package loadgen

import (
	"context"
	"fmt"
	"math"
	"time"
)

// FindMaxStep is one short constant-rate run of the --find-max search.
type FindMaxStep struct {
	OfferedRPS     float64  `json:"offered_rps"`
	RPS            float64  `json:"rps"`
	P95            float64  `json:"p95_ms"`
	P99            float64  `json:"p99_ms"`
	ErrorRate      float64  `json:"error_rate"`
	Passed         bool     `json:"passed"`
	GeneratorBound bool     `json:"generator_bound,omitempty"`
	Failed         []string `json:"failed,omitempty"`
}

// findMax searches the highest offered rate whose step still meets every
// threshold: it doubles the rate from the scenario's until a step fails,
// then bisects between the last pass and the first fail until they are
// within 10% of each other (or the step budget is spent). The connections
// stay held throughout. A step where the generator itself was the
// bottleneck ends the search: the capacity found is then a lower bound.
func findMax(ctx context.Context, o *Options, p *plan, eng *openEngine, wl Workload) (*ScenarioReport, error) {
	step := o.StepDuration
	if step <= 0 {
		step = 10 * time.Second
	}
	maxSteps := o.MaxSteps
	if maxSteps <= 0 {
		maxSteps = 12
	}
	conns := p.prof.maxConns()
	eng.hold(ctx, conns, o.Progress, p.sc.Name)
	rate := p.prof.meanRate()
	if rate <= 0 {
		rate = 100
	}
	var lo, hi float64
	var best, last *ScenarioReport
	var steps []FindMaxStep
	var timeline []Interval
	var marks []StageMark
	offset := 0.0
	boundedByGenerator := false
	for i := 0; i < maxSteps && ctx.Err() == nil; i++ {
		rate = math.Round(rate*10) / 10
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "[%s] find-max step %d: offering %.1f req/s for %s\n", p.sc.Name, i+1, rate, step)
		}
		prof := constantProfile(step, conns, rate)
		res := eng.run(ctx, prof, newRecorder(wl.Ops(), len(eng.cfg.eps)))
		sr := buildScenarioReport(p.sc.Name, p, res, p.gates(rate), o)
		st := FindMaxStep{OfferedRPS: rate, RPS: sr.RPS, P95: sr.LatencyMs.P95, P99: sr.LatencyMs.P99,
			ErrorRate: sr.ErrorRate, Passed: sr.Passed, GeneratorBound: sr.GeneratorLoad.Bound}
		for _, t := range sr.Thresholds {
			if !t.OK {
				st.Failed = append(st.Failed, t.Expr)
			}
		}
		steps = append(steps, st)
		for _, iv := range sr.Timeline {
			iv.T = round3(iv.T + offset)
			iv.Stage = i
			timeline = append(timeline, iv)
		}
		marks = append(marks, StageMark{Index: i, Start: offset, End: offset + step.Seconds(), Connections: conns, Rate: rate})
		offset += step.Seconds() + 1
		last = sr
		if o.Progress != nil {
			verdict := "meets the SLOs"
			if !sr.Passed {
				verdict = fmt.Sprintf("fails %v", st.Failed)
			}
			fmt.Fprintf(o.Progress, "[%s] find-max step %d: %.1f req/s offered, %.1f served, p95 %.1fms: %s\n",
				p.sc.Name, i+1, rate, sr.RPS, sr.LatencyMs.P95, verdict)
		}
		if sr.Passed {
			lo, best = rate, sr
			if sr.GeneratorLoad.Bound {
				boundedByGenerator = true
				break
			}
			if hi == 0 {
				rate *= 2
			} else {
				rate = (lo + hi) / 2
			}
		} else {
			hi = rate
			if lo == 0 {
				rate /= 2
				if rate < 1 {
					break
				}
			} else {
				rate = (lo + hi) / 2
			}
		}
		if lo > 0 && hi > 0 && (hi-lo) <= 0.1*lo {
			break
		}
		// Let the server drain its queues before the next step (longer
		// after a step it failed: it may still be catching up).
		pause := min(time.Second, step/2)
		if !sr.Passed {
			pause = min(5*time.Second, max(pause, step/2))
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
		}
	}
	sr := best
	if sr == nil {
		sr = last
	}
	if sr == nil {
		return nil, ctx.Err()
	}
	capacity := lo
	sr.CapacityRPS = &capacity
	sr.Steps = steps
	sr.Timeline = timeline
	sr.Stages = marks
	sr.Passed = best != nil
	if best == nil {
		sr.Warnings = append(sr.Warnings, "no step met the SLOs, not even the lowest rate tried")
	}
	if boundedByGenerator {
		sr.Warnings = append(sr.Warnings, fmt.Sprintf("the search stopped at %.1f req/s because the GENERATOR was the bottleneck: capacity_rps is a lower bound", capacity))
	} else if hi == 0 && best != nil {
		sr.Warnings = append(sr.Warnings, "every step met the SLOs: raise --max-steps to search higher; capacity_rps is a lower bound")
	}
	return sr, nil
}
