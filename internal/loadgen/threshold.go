package loadgen

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Threshold is one SLO gate, e.g. "history:p95<350ms" or "error_rate<1%".
//
// Grammar: [SCOPE:]METRIC OP VALUE
//   - SCOPE: a scenario name (the gate applies to that scenario's totals
//     only) or an operation name (history, history_deep, send,
//     conversation_list, unread: the gate applies to that operation within
//     every scenario that runs it). No scope: every scenario's totals.
//   - METRIC: p50 p90 p95 p99 p99.9 max mean (latency), error_rate, errors,
//     requests, rps (successful responses per second).
//   - OP: < <= > >=
//   - VALUE: latencies take a unit (us, ms, s; ms when omitted);
//     error_rate takes a percentage ("1%") or a fraction ("0.01").
type Threshold struct {
	Expr   string  `json:"expr"`
	Scope  string  `json:"scope,omitempty"`
	Metric string  `json:"metric"`
	Op     string  `json:"op"`
	Value  float64 `json:"value"` // milliseconds for latency, 0..1 for error_rate
}

// ThresholdResult is a threshold evaluated against a run.
type ThresholdResult struct {
	Expr   string  `json:"expr"`
	OK     bool    `json:"ok"`
	Actual float64 `json:"actual"` // in the metric's unit (ms, 0..1, count, 1/s)
	Source string  `json:"source,omitempty"`
}

var latencyMetrics = map[string]func(Latency) float64{
	"p50":   func(l Latency) float64 { return l.P50 },
	"p90":   func(l Latency) float64 { return l.P90 },
	"p95":   func(l Latency) float64 { return l.P95 },
	"p99":   func(l Latency) float64 { return l.P99 },
	"p99.9": func(l Latency) float64 { return l.P999 },
	"p999":  func(l Latency) float64 { return l.P999 },
	"max":   func(l Latency) float64 { return l.Max },
	"mean":  func(l Latency) float64 { return l.Mean },
	"avg":   func(l Latency) float64 { return l.Mean },
}

// ParseThreshold parses one threshold expression.
func ParseThreshold(expr string) (Threshold, error) {
	s := strings.Join(strings.Fields(expr), "")
	t := Threshold{Expr: s}
	i := strings.IndexAny(s, "<>")
	if i <= 0 {
		return t, fmt.Errorf("threshold %q: want [scope:]metric<value (or <=, >, >=)", expr)
	}
	left, right := s[:i], s[i:]
	t.Op = right[:1]
	if len(right) > 1 && right[1] == '=' {
		t.Op += "="
	}
	right = right[len(t.Op):]
	if scope, metric, ok := strings.Cut(left, ":"); ok {
		if scope == "" {
			return t, fmt.Errorf("threshold %q: empty scope", expr)
		}
		t.Scope, left = scope, metric
	}
	t.Metric = strings.ToLower(left)
	if right == "" {
		return t, fmt.Errorf("threshold %q: no value", expr)
	}
	var err error
	switch {
	case latencyMetrics[t.Metric] != nil:
		t.Value, err = parseLatencyValue(right)
	case t.Metric == "error_rate":
		if v, ok := strings.CutSuffix(right, "%"); ok {
			t.Value, err = strconv.ParseFloat(v, 64)
			t.Value /= 100
		} else {
			t.Value, err = strconv.ParseFloat(right, 64)
		}
	case t.Metric == "rps":
		t.Value, err = strconv.ParseFloat(strings.TrimSuffix(right, "/s"), 64)
	case t.Metric == "errors" || t.Metric == "requests":
		t.Value, err = strconv.ParseFloat(right, 64)
	default:
		return t, fmt.Errorf("threshold %q: unknown metric %q (want p50, p90, p95, p99, p99.9, max, mean, error_rate, errors, requests or rps)", expr, left)
	}
	if err != nil {
		return t, fmt.Errorf("threshold %q: bad value %q: %w", expr, right, err)
	}
	if math.IsNaN(t.Value) || math.IsInf(t.Value, 0) || t.Value < 0 {
		return t, fmt.Errorf("threshold %q: value %q is not a finite number of at least 0", expr, right)
	}
	return t, nil
}

func parseLatencyValue(v string) (float64, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return f, nil // milliseconds
	}
	v = strings.ReplaceAll(v, "µs", "us")
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, err
	}
	return float64(d) / float64(time.Millisecond), nil
}

// actual extracts the threshold's metric from t.
func (th Threshold) actual(t Totals) float64 {
	if f := latencyMetrics[th.Metric]; f != nil {
		return f(t.Latency)
	}
	switch th.Metric {
	case "error_rate":
		return t.ErrorRate
	case "rps":
		return t.RPS
	case "errors":
		return float64(t.Errors)
	case "requests":
		return float64(t.Requests)
	}
	return 0
}

// eval checks the threshold against t.
func (th Threshold) eval(t Totals) ThresholdResult {
	a := th.actual(t)
	var ok bool
	switch th.Op {
	case "<":
		ok = a < th.Value
	case "<=":
		ok = a <= th.Value
	case ">":
		ok = a > th.Value
	case ">=":
		ok = a >= th.Value
	}
	return ThresholdResult{Expr: th.Expr, OK: ok, Actual: a}
}
