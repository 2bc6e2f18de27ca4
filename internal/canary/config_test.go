package canary

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDeployConfigs: the shipped configurations load strictly and validate,
// and say what the seed asks: 10/25/50/100, cache and replica, 30 s checks.
func TestDeployConfigs(t *testing.T) {
	for file, endpoint := range map[string]string{"message-history.yaml": "message_history", "conversation-list.yaml": "conversation_list"} {
		c, err := LoadConfig(filepath.Join("..", "..", "deploy", "canary", file))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(15 * time.Second); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if c.Endpoint != endpoint || len(c.Stages) != 4 || c.Stages[3] != 100 || c.Interval != 30*time.Second ||
			!c.Optimized.Cache || !c.Optimized.Replica || c.SLO.P95 != 350*time.Millisecond ||
			c.Triggers.Errors.MaxIncrease != 0.2 || c.Triggers.QueueWait.MaxIncrease != 0.5 || c.Triggers.Saturation.Max != 0.85 {
			t.Errorf("%s: %+v", file, c)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	base := "endpoint: message_history\noptimized: {cache: true}\nslo: {p95: 350ms}\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", base + "intervall: 5s\n", "intervall"},
		{"unknown endpoint", strings.Replace(base, "message_history", "messages", 1), "endpoint"},
		{"stages not increasing", base + "stages: [10, 5, 100]\n", "stages"},
		{"last stage not 100", base + "stages: [10, 50]\n", "last stage"},
		{"nothing optimized", strings.Replace(base, "{cache: true}", "{}", 1), "optimized"},
		{"no SLO", strings.Replace(base, "slo: {p95: 350ms}\n", "", 1), "slo.p95"},
		{"window under 4 scrapes", base + "window: 30s\n", "window"},
		{"settle under the window", base + "window: 2m\nsettle: 1m\n", "settle"},
		{"bad selector", base + "selector: 'job=parley'\n", "selector"},
		{"bad alpha", base + "triggers: {errors: {alpha: 2}}\n", "triggers.errors"},
		{"k over n", base + "triggers: {saturation: {k: 6, n: 5}}\n", "saturation"},
		{"not a duration", base + "dwell: soon\n", "line 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(path)
			if err == nil {
				err = c.Validate(15 * time.Second)
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want ErrConfig naming %q", err, tc.want)
			}
		})
	}
}

// TestDecide is the controller's policy on synthetic checks.
func TestDecide(t *testing.T) {
	cfg := &Config{FailureLimit: 2, ErrorLimit: 3, MinChecks: 2, InconclusiveLimit: time.Minute}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	holdEnds := t0.Add(time.Minute)
	fail := Check{Verdict: Fail, Trigger: TriggerErrors, Reason: "worse"}
	breaker := Check{Verdict: Fail, Trigger: TriggerBreaker, Immediate: true}
	pass := Check{Verdict: Pass}
	inc := Check{Verdict: Inconclusive, Reason: "too few requests"}
	errc := Check{Verdict: Error}
	type step struct {
		chk  Check
		at   time.Duration
		want string
	}
	for _, tc := range []struct {
		name  string
		state string
		final bool
		steps []step
	}{
		{"breaker rolls back at once", StateRunning, false, []step{{breaker, 0, ActionRollback}}},
		{"a failure holds, two in a row roll back", StateRunning, false, []step{{fail, 0, ActionHold}, {fail, 10 * time.Second, ActionRollback}}},
		{"a pass between failures resets", StateRunning, false, []step{{fail, 0, ActionHold}, {pass, 1, ActionHold}, {fail, 2, ActionHold}}},
		{"an inconclusive check between failures resets", StateRunning, false, []step{{fail, 0, ActionHold}, {inc, 1, ActionHold}, {fail, 2, ActionHold}}},
		{"passes advance after the hold", StateRunning, false, []step{{pass, 0, ActionHold}, {pass, 30 * time.Second, ActionHold}, {pass, time.Minute, ActionAdvance}}},
		{"the hold over but too few passes", StateRunning, false, []step{{pass, 2 * time.Minute, ActionHold}, {pass, 3 * time.Minute, ActionAdvance}}},
		{"the last stage promotes", StateRunning, true, []step{{pass, 0, ActionHold}, {pass, time.Minute, ActionPromote}}},
		{"inconclusive never advances, pauses after the limit", StateRunning, false, []step{{inc, 0, ActionHold}, {inc, 30 * time.Second, ActionHold}, {inc, 2 * time.Minute, ActionPause}}},
		{"paused never advances", StatePaused, false, []step{{pass, time.Minute, ActionHold}, {pass, 2 * time.Minute, ActionHold}}},
		{"paused still rolls back", StatePaused, false, []step{{breaker, 0, ActionRollback}}},
		{"errors roll back blind after the limit", StateRunning, false, []step{{errc, 0, ActionHold}, {errc, 1, ActionHold}, {errc, 2, ActionRollback}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := &Run{State: tc.state}
			for i, s := range tc.steps {
				now := t0.Add(s.at)
				got, reason := Decide(cfg, run, s.chk, now, holdEnds, tc.final)
				if got != s.want {
					t.Fatalf("step %d (%s at %v): %s (%s), want %s", i, s.chk.Verdict, s.at, got, reason, s.want)
				}
			}
		})
	}
}

// TestStoredConfig: a run stores its configuration with the YAML's keys and
// readable durations, and the verbs read back what they need.
func TestStoredConfig(t *testing.T) {
	c, err := LoadConfig(filepath.Join("..", "..", "deploy", "canary", "message-history.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	b, err := c.storedJSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"interval":"30s"`, `"ref_window":"5m0s"`, `"min_requests":200`, `"p95":"350ms"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("stored configuration lacks %s: %s", want, b)
		}
	}
	var sc storedConfig
	if err := json.Unmarshal(b, &sc); err != nil || !sc.Optimized.Cache || !sc.Optimized.Replica || len(sc.Stages) != 4 {
		t.Errorf("read back %+v, %v", sc, err)
	}
}
