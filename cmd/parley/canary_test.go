package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestCanaryExitCodes: bad flags and configurations exit 2 before anything
// is contacted.
func TestCanaryExitCodes(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("endpoint: message_history\nintervall: 5s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join("..", "..", "deploy", "canary", "message-history.yaml")
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"no subcommand", nil, 2},
		{"unknown subcommand", []string{"rollout"}, 2},
		{"run without a configuration", []string{"run"}, 2},
		{"unknown key in the configuration", []string{"run", "--config", bad}, 2},
		{"missing configuration file", []string{"run", "--config", "/nonexistent.yaml"}, 2},
		{"window under 4 scrapes", []string{"run", "--config", good, "--window", "10s", "--scrape-interval", "15s"}, 2},
		{"unknown endpoint", []string{"run", "--config", good, "--endpoint", "messages"}, 2},
		{"pause without an endpoint", []string{"pause"}, 2},
		{"no database without a local stack", []string{"status"}, 2},
		{"help", []string{"--help"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PARLEY_DATA_DIR", t.TempDir()) // no local stack
			t.Setenv("PARLEY_PRIMARY_URL", "")
			t.Setenv("PARLEY_PROMETHEUS_URL", "")
			if code := exitCode(runCanary(context.Background(), tc.args)); code != tc.want {
				t.Errorf("exit %d, want %d", code, tc.want)
			}
		})
	}
}
