package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/app"
	"github.com/parley-chat/parley/internal/canary"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/rollout"
	"github.com/parley-chat/parley/internal/stack/stacktest"
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

// TestCanaryKilledResumesAndAborts runs the parley binary against a real
// `serve()` registered with the test stack's Prometheus through
// --prometheus-sd-file: the controller SIGKILLed at 25 % leaves the run and
// the rollout there; started again it resumes at 25 % (never back to 10 %);
// `parley canary abort` ends it at 0 % with exit status 3.
func TestCanaryKilledResumesAndAborts(t *testing.T) {
	s := stacktest.ForTest(t)
	db := s.NewDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const token = "adm_canary_cmd"
	sd := filepath.Join(s.TargetsDir(), db.Name+".json")
	cfg := serveConfig{HTTPAddr: "127.0.0.1:0", PrometheusSDFile: sd, Config: app.Config{
		PrimaryURL: db.PgBouncerURL, PrimaryExecMode: "exec",
		ReplicaURLs: []string{db.ReplicaURL}, ReplicaExecMode: "cache_statement",
		RedisURL: s.RedisURL(), CachePrefix: db.Name + ":", PgBouncerAdminURL: s.PgBouncerAdminURL(),
		AdminToken: token, ShutdownTimeout: 5 * time.Second, PrimaryPoolConns: 8, ReplicaPoolConns: 8,
		RequestTimeout: 10 * time.Second, AcquireTimeout: 2 * time.Second, MaxReplicaLag: 5 * time.Second,
	}}
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, func(a string) { addrc <- a }) }()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start")
	}
	t.Cleanup(func() {
		cancel()
		<-done
		if _, err := os.Stat(sd); err == nil {
			t.Error("serve left its Prometheus target file behind")
		}
	})
	if _, err := os.Stat(sd); err != nil {
		t.Fatalf("serve --prometheus-sd-file: %v", err)
	}
	c := stacktest.NewClient(t, "http://"+addr, token)
	stacktest.WaitFor(t, 20*time.Second, "the server ready with its replica", func() bool {
		return strings.Contains(string(c.Do("GET", "/readyz", "", nil).Body), `"status":"ok"`)
	})
	// Users (several in the 10 % cohort), a conversation each, and a reader.
	var users []stacktest.User
	convs := map[string]string{}
	for in := 0; len(users) < 30 || in < 4; {
		u := c.CreateUser()
		users = append(users, u)
		id, _ := strconv.ParseInt(u.ID, 10, 64)
		if rollout.InRollout(chat.EndpointMessageHistory, id, 10) {
			in++
		}
	}
	for _, u := range users {
		conv := c.CreateConversation(u, "canary")
		c.Send(conv.ID, u, "hello")
		convs[u.ID] = conv.ID
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(cancel)
	for w := range 4 {
		wg.Go(func() {
			for i := w; ctx.Err() == nil; i += 4 {
				u := users[i%len(users)]
				req, _ := http.NewRequestWithContext(ctx, "GET", c.Base+"/v1/conversations/"+convs[u.ID]+"/messages?limit=20", nil)
				req.Header.Set("Authorization", "Bearer "+u.Token)
				if resp, err := c.HTTP.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				time.Sleep(12 * time.Millisecond)
			}
		})
	}
	conf := filepath.Join(t.TempDir(), "canary.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`endpoint: message_history
optimized: {cache: true, replica: true}
interval: 2s
window: 5s
settle: 6s
dwell: 4s
min_checks: 2
selector: 'instance=%q'
slo: {p95: 350ms}
triggers:
  errors: {min_requests: 40}
  latency: {min_requests: 40}
  queue_wait: {ref_window: 10s}
  mann_whitney: {min_points: 3}
`, addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	runBinary(t, []string{"--help"}, nil) // builds it
	env := append(os.Environ(), "PARLEY_PRIMARY_URL="+db.PrimaryURL, "PARLEY_PROMETHEUS_URL="+s.PrometheusURL(),
		"PARLEY_ADMIN_TOKEN="+token, "PARLEY_DATA_DIR="+t.TempDir(), "PARLEY_URL=http://"+addr, "PARLEY_PROMETHEUS_SCRAPE_INTERVAL=1s")
	start := func(out *stacktest.LogBuffer, args ...string) *exec.Cmd {
		cmd := exec.Command(binPath, args...)
		cmd.Env, cmd.Stdout, cmd.Stderr = env, out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	store, err := canary.OpenStore(ctx, db.PrimaryURL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	waitStage := func(percent int) {
		t.Helper()
		stacktest.WaitFor(t, 2*time.Minute, fmt.Sprintf("the %d%% stage", percent), func() bool {
			r, err := store.LiveRun(ctx, chat.EndpointMessageHistory)
			return err == nil && r != nil && r.StagePercent == percent && r.StageStartedAt != nil
		})
	}
	percent := func() int {
		r, err := canary.NewAdminClient(c.Base, token).Get(ctx, chat.EndpointMessageHistory)
		if err != nil {
			t.Fatal(err)
		}
		return r.Percent
	}

	first := &stacktest.LogBuffer{}
	cmd := start(first, "canary", "run", "--config", conf)
	waitStage(25)
	time.Sleep(500 * time.Millisecond) // the PUT confirmed
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t.Logf("first controller (killed):\n%s", first.String())
	if p := percent(); p != 25 {
		t.Fatalf("rollout at %d%% after the kill, want 25", p)
	}

	second := &stacktest.LogBuffer{}
	cmd = start(second, "canary", "run", "--config", conf)
	waitStage(50)
	abort := exec.Command(binPath, "canary", "abort", "--endpoint", "message_history")
	abort.Env = env
	out, err := abort.CombinedOutput()
	if err != nil {
		t.Fatalf("abort: %v: %s", err, out)
	}
	err = cmd.Wait()
	t.Logf("second controller:\n%s", second.String())
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("second controller: %v, want exit status 3 after abort", err)
	}
	if p := percent(); p != 0 {
		t.Errorf("rollout at %d%% after abort, want 0", p)
	}
	runs, err := store.Runs(ctx, chat.EndpointMessageHistory, 1)
	if err != nil || len(runs) != 1 {
		t.Fatalf("runs: %v %v", runs, err)
	}
	ds, err := store.Decisions(ctx, runs[0].ID, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, d := range ds {
		if d.Verdict == "" {
			actions = append(actions, fmt.Sprintf("%s@%d", d.Action, d.StagePercent))
		}
	}
	if want := "start@10 advance@25 resume@25 advance@50 rolled_back@0"; strings.Join(actions, " ") != want {
		t.Errorf("actions %v, want %s", actions, want)
	}
	if runs[0].State != canary.StateRolledBack || deref(runs[0].Trigger) != canary.TriggerAbort {
		t.Errorf("run %s by %s, want rolled_back by abort", runs[0].State, deref(runs[0].Trigger))
	}
}
