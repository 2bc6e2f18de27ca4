package loadgen

import (
	"testing"
)

func TestParseThreshold(t *testing.T) {
	tests := []struct {
		in     string
		scope  string
		metric string
		op     string
		value  float64
		err    bool
	}{
		{"history:p95<350ms", "history", "p95", "<", 350, false},
		{"p99 <= 1.5s", "", "p99", "<=", 1500, false},
		{"max<800us", "", "max", "<", 0.8, false},
		{"p50<20", "", "p50", "<", 20, false},
		{"p99.9<1s", "", "p99.9", "<", 1000, false},
		{"error_rate<1%", "", "error_rate", "<", 0.01, false},
		{"send:error_rate<=0.005", "send", "error_rate", "<=", 0.005, false},
		{"rps>100", "", "rps", ">", 100, false},
		{"rps>=150/s", "", "rps", ">=", 150, false},
		{"errors<1", "", "errors", "<", 1, false},
		{"p95", "", "", "", 0, true},
		{"p97<3ms", "", "", "", 0, true},
		{"p95<fast", "", "", "", 0, true},
		{":p95<3ms", "", "", "", 0, true},
		{"p95<", "", "", "", 0, true},
		{"p95<NaN", "", "", "", 0, true}, // found by FuzzParseThreshold: no gate
		{"rps>-1", "", "", "", 0, true},
		{"p99<-5ms", "", "", "", 0, true},
	}
	for _, tc := range tests {
		th, err := ParseThreshold(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("ParseThreshold(%q) = %+v, want an error", tc.in, th)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseThreshold(%q): %v", tc.in, err)
			continue
		}
		if th.Scope != tc.scope || th.Metric != tc.metric || th.Op != tc.op || th.Value != tc.value {
			t.Errorf("ParseThreshold(%q) = %+v", tc.in, th)
		}
	}
}

func TestEvalThresholds(t *testing.T) {
	overall := Totals{Requests: 1000, Errors: 20, ErrorRate: 0.02, RPS: 98, Latency: Latency{P50: 10, P95: 300, P99: 500, Max: 900}}
	ops := map[string]Totals{
		"history": {Requests: 700, Latency: Latency{P95: 200}},
		"send":    {Requests: 300, Errors: 20, ErrorRate: 20.0 / 300, Latency: Latency{P95: 400}},
	}
	tests := []struct {
		expr    string
		ok      bool
		applies bool
	}{
		{"p95<350ms", true, true},
		{"p95<250ms", false, true},
		{"error_rate<1%", false, true},
		{"error_rate<5%", true, true},
		{"rps>100", false, true},
		{"rps>=98", true, true},
		{"errors<1", false, true},
		{"history:p95<250ms", true, true},
		{"send:p95<250ms", false, true},
		{"mixed:p95<350ms", true, true},  // the scenario's own name: its totals
		{"unread:p95<1ms", false, false}, // an operation this mix lacks: not applied
	}
	for _, tc := range tests {
		th, err := ParseThreshold(tc.expr)
		if err != nil {
			t.Fatal(err)
		}
		res := evalThresholds([]Threshold{th}, "mixed", overall, ops)
		if !tc.applies {
			if len(res) != 0 {
				t.Errorf("%s applied: %+v", tc.expr, res)
			}
			continue
		}
		if len(res) != 1 || res[0].OK != tc.ok {
			t.Errorf("%s → %+v, want ok=%v", tc.expr, res, tc.ok)
		}
	}
	if err := checkScopes([]string{"bogus:p95<1ms"}, allScenarios, KnownOps); err == nil {
		t.Error("an unknown scope must be rejected")
	}
	if err := checkScopes([]string{"history_deep:p95<1ms", "spike:p99<1s"}, allScenarios, KnownOps); err != nil {
		t.Error(err)
	}
}
