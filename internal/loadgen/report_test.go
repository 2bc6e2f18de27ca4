package loadgen

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// sampleReport runs a short open-model run with a failing and a passing gate.
func sampleReport(t *testing.T) *Report {
	t.Helper()
	srv := newRawServer(t, 2*time.Millisecond)
	ctxRep, err := Run(t.Context(), Options{URL: srv.url(), Rate: 100, Duration: 1500 * time.Millisecond, Connections: 5,
		Thresholds: []string{"p95<1s", "rps>1000"}, Seed: 3,
		Stages: []Stage{{Duration: 500 * time.Millisecond, Connections: -1, Rate: 50}, {Duration: time.Second, Connections: -1, Rate: 100}}})
	if err != nil {
		t.Fatal(err)
	}
	return ctxRep
}

func TestJSONReportSchema(t *testing.T) {
	t.Parallel()
	rep := sampleReport(t)
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if p, ok := doc["passed"].(bool); !ok || p {
		t.Errorf("top-level passed = %v, want false (rps>1000 fails)", doc["passed"])
	}
	scs, ok := doc["scenarios"].([]any)
	if !ok || len(scs) != 1 {
		t.Fatalf("scenarios = %v", doc["scenarios"])
	}
	sc := scs[0].(map[string]any)
	for _, k := range []string{"name", "requests", "errors", "error_rate", "rps", "offered_rps", "latency_ms",
		"connections", "thresholds", "passed", "timeline", "stages", "send_lag", "generator", "errors_by_class", "status_codes"} {
		if _, ok := sc[k]; !ok {
			t.Errorf("scenario lacks %q", k)
		}
	}
	if _, ok := sc["capacity_rps"]; ok {
		t.Error("capacity_rps present without --find-max")
	}
	lat := sc["latency_ms"].(map[string]any)
	for _, k := range []string{"p50", "p90", "p95", "p99", "max"} {
		if _, ok := lat[k].(float64); !ok {
			t.Errorf("latency_ms lacks %q", k)
		}
	}
	conns := sc["connections"].(map[string]any)
	if conns["requested"].(float64) != 5 || conns["established"].(float64) != 5 {
		t.Errorf("connections = %v", conns)
	}
	ths := sc["thresholds"].([]any)
	if len(ths) != 2 {
		t.Fatalf("thresholds = %v", ths)
	}
	for i, want := range []bool{true, false} {
		th := ths[i].(map[string]any)
		if _, ok := th["expr"].(string); !ok || th["ok"] != want {
			t.Errorf("threshold %d = %v, want ok=%v", i, th, want)
		}
	}
	if sc["requests"].(float64) != 100 { // 0.5 s × 50/s + 1 s ramping 50 → 100/s
		t.Errorf("requests = %v, want 100", sc["requests"])
	}
}

func TestHTMLReportIsSelfContained(t *testing.T) {
	t.Parallel()
	rep := sampleReport(t)
	rep.Scenarios[0].Description = "see https://example.com and http://x for details" // must not leak
	rep.Scenarios[0].Warnings = append(rep.Scenarios[0].Warnings, "<script>alert(1)</script>")
	var buf bytes.Buffer
	if err := rep.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, bad := range []string{"http://", "https://", "<script", "src=", "@import", "url("} {
		if strings.Contains(page, bad) {
			t.Errorf("the HTML report contains %q", bad)
		}
	}
	for _, want := range []string{"<svg", "<polyline", "latency per second", "throughput", "errors per second", "stage 2", "FAILED", "rps&gt;1000"} {
		if !strings.Contains(page, want) {
			t.Errorf("the HTML report lacks %q", want)
		}
	}
}

func TestTextReport(t *testing.T) {
	t.Parallel()
	rep := sampleReport(t)
	var buf bytes.Buffer
	rep.WriteText(&buf)
	out := buf.String()
	for _, want := range []string{"open model", "offered", "send lag", "connections  requested 5, established 5", "FAIL rps>1000", "result: FAILED"} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
	if f := rep.FailedThresholds(); len(f) != 1 || !strings.Contains(f[0], "rps>1000") {
		t.Errorf("FailedThresholds = %v", f)
	}
}

// Without gates the lists are empty, not null, and the run passes.
func TestJSONReportWithoutThresholds(t *testing.T) {
	t.Parallel()
	srv := newRawServer(t, 0)
	rep, err := Run(t.Context(), Options{URL: srv.url(), Closed: true, Connections: 1, Duration: 200 * time.Millisecond, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"thresholds": []`) || !rep.Passed {
		t.Errorf("passed %v; JSON:\n%s", rep.Passed, buf.String())
	}
}
