package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/parley-chat/parley/internal/app"
	"github.com/parley-chat/parley/internal/chaos"
)

func init() {
	register(command{name: "chaos", summary: "fault scenarios on the real stack, judged: no acknowledged write lost, read-your-writes, targets", run: runChaos})
}

const chaosHelp = `Runs fault scenarios against Parley and judges them.

By default it brings up its own throwaway stack (PostgreSQL primary + streaming
replica, PgBouncer, Redis; fsync on) in a new directory under /var/tmp, migrates
it, and for each scenario builds two API servers as 'parley serve' does — with
serve's defaults for the pool wait bound, the request deadline, the database
budget, the replica lag bound and wait, and admission control (the PARLEY_*
variables serve reads apply; pools of 10 connections each) —, puts every read
endpoint on the optimized path (cache and replica), and runs a
workload of clients through the HTTP API: reads on every read endpoint, sends
with an Idempotency-Key, each client retrying the same key after an error or a
timeout (honouring Retry-After). After each acknowledged send the writer's next
read goes to the OTHER instance and must show it.

Each scenario: a before phase, the fault (a real mechanism), heal, an after
phase, the clients' last retries, then the judge: every message of the run is
read from the primary; every acknowledged send must be there exactly once, no
key may have two rows, sends acknowledged one after another stay in that order,
no read-your-writes violation, no read from the cache or the primary missing a
message acknowledged before it began; then the scenario's own targets.

Scenarios (--scenario NAME[,NAME...] or all):
  replica-lag        pg_wal_replay_pause() 10 s, resume: 0 failed requests, breaker
                     open <= 2 s, replica back <= 5 s after the resume
  cache-failure      Redis stopped, started, hung (SIGSTOP): 100 % success, p95
                     added <= 5 ms, no stale cached value after the outage
  pool-exhaustion    2x PgBouncer's pool of long transactions: every request served
                     or 503 + Retry-After, >= 95 % success, max queue wait <= 2 s
  partition          replica link black-holed by a proxy, then 200 ms latency: 100 %
                     success, breaker open <= 1 s, no wait on the dead link past the
                     prober timeout
  slow-query-storm   10 CPU-heavy queries at once on the primary: API p95 < 20 ms,
                     the storm ends at statement_timeout
  primary-restart    pg_ctl restart -m immediate: 0 acknowledged writes lost, sends
                     back <= 2 s after PostgreSQL accepts, no request over 2 s
  pgbouncer-restart  PgBouncer SIGKILLed and restarted, then hung 5 s: the same, and
                     cache hits keep being served
  redis-partial      one instance's Redis link dropped then slowed: read-your-writes
                     on the other instance, no stale cached page
  client-abort       clients hang up mid-send: every committed send is visible to
                     its writer's next read on every instance

--short shortens every phase (make test runs the suite so, in a few minutes).
--target URL (repeatable or comma-separated) tests running servers instead; the
faults then act on the stack in --data-dir (e.g. parley dev's), and partition and
redis-partial, which need a proxy inside the servers, are reported as not run.

Progress lines go to stderr; the results table (Markdown) to stdout; --json
writes one object per scenario. Exit status: 0 every target met (with --gate
correctness: every correctness target), 1 a target missed or a scenario could
not run, 2 bad flags.`

func runChaos(ctx context.Context, args []string) error {
	f := newFlags("chaos", "[--scenario NAME|all] [--short] [--json FILE] [--target URL --admin-token T --data-dir DIR]", chaosHelp, "text")
	var (
		cfg       chaos.Config
		scenario  string
		jsonPath  string
		serverLog string
		gate      string
		admission bool
	)
	f.String(&scenario, "scenario", "PARLEY_CHAOS_SCENARIO", "all", "scenarios to run: a name, a comma-separated list, or all ("+strings.Join(chaos.Names(), ", ")+")")
	f.Bool(&cfg.Short, "short", "PARLEY_CHAOS_SHORT", false, "shortened phases (the CI suite)")
	f.String(&jsonPath, "json", "PARLEY_CHAOS_JSON", "", "write the results here as JSON (one object per scenario)")
	f.List(&cfg.Targets, "target", "PARLEY_CHAOS_TARGETS", ",", "base URL of a running server to test (repeatable; default: two servers built here on a throwaway stack)")
	f.Secret(&cfg.AdminToken, "admin-token", "PARLEY_ADMIN_TOKEN", "the targets' admin token (with --target; default: a random one for the servers built here)")
	f.String(&cfg.DataDir, "data-dir", "PARLEY_DATA_DIR", "", "with --target: the stack the targets run on, whose daemons the faults act on")
	f.String(&cfg.WorkDir, "work-dir", "PARLEY_CHAOS_WORK_DIR", "", "where the throwaway stack lives (default: a new directory under /var/tmp, removed at the end)")
	f.Bool(&cfg.KeepStack, "keep-stack", "PARLEY_CHAOS_KEEP_STACK", false, "leave the throwaway stack running and in place")
	f.Int(&cfg.Clients, "clients", "PARLEY_CHAOS_CLIENTS", 8, "workload clients (writers) per scenario")
	f.Float(&cfg.Rate, "rate", "PARLEY_CHAOS_RATE", 25, "requests per second of each client")
	f.Bool(&admission, "admission", "PARLEY_CHAOS_ADMISSION", true,
		"admission control in the servers built here, as parley serve has it by default (false: off, to compare)")
	f.String(&gate, "gate", "PARLEY_CHAOS_GATE", "all",
		"what decides the exit status: all (every target) or correctness (no acknowledged write lost, duplicated, reordered or invented, read-your-writes, no stale read; the latency, success-rate and recovery targets are still measured and reported)")
	f.String(&serverLog, "server-log", "PARLEY_CHAOS_SERVER_LOG", "", "write the servers' log (warnings and errors, as JSON) to this file (default: discarded)")
	if err := f.Parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, f.Args())
	}
	if scenario == "all" || scenario == "" {
		cfg.Scenarios = chaos.Names()
	} else {
		cfg.Scenarios = splitList(scenario, ",")
		known := map[string]bool{}
		for _, n := range chaos.Names() {
			known[n] = true
		}
		for _, n := range cfg.Scenarios {
			if !known[n] {
				return fmt.Errorf("%w: unknown scenario %q (want one of %s, or all)", errUsage, n, strings.Join(chaos.Names(), ", "))
			}
		}
	}
	if gate != "all" && gate != "correctness" {
		return fmt.Errorf("%w: --gate %q: want all or correctness", errUsage, gate)
	}
	if cfg.Clients < 1 || cfg.Rate <= 0 {
		return fmt.Errorf("%w: --clients must be at least 1 and --rate positive", errUsage)
	}
	if jsonPath != "" {
		// Found out now, not after the run.
		if st, err := os.Stat(filepath.Dir(jsonPath)); err != nil || !st.IsDir() {
			return fmt.Errorf("%w: --json %s: its directory does not exist", errUsage, jsonPath)
		}
	}
	for _, t := range cfg.Targets {
		if u, err := url.Parse(t); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: --target %q: want a base URL such as http://127.0.0.1:8080", errUsage, t)
		}
	}
	if len(cfg.Targets) > 0 && (cfg.DataDir == "" || cfg.AdminToken == "") {
		return fmt.Errorf("%w: --target needs --data-dir (the stack the faults act on) and --admin-token", errUsage)
	}
	server, err := serveDefaults()
	if err != nil {
		return err
	}
	server.Admission.Enabled = admission
	cfg.Server = server
	cfg.Progress = os.Stderr
	if serverLog != "" {
		lf, err := os.Create(serverLog)
		if err != nil {
			return fmt.Errorf("server log: %w", err)
		}
		defer lf.Close()
		cfg.Logger = slog.New(slog.NewJSONHandler(lf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	} else {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	results, err := chaos.Run(ctx, cfg)
	if len(results) > 0 {
		chaos.PrintTable(os.Stdout, results)
		if jsonPath != "" {
			if werr := chaos.WriteJSON(jsonPath, results); werr != nil {
				return fmt.Errorf("write %s: %w", jsonPath, werr)
			}
		}
	}
	if err != nil {
		return err
	}
	var failed, missed []string
	for _, r := range results {
		switch {
		case gate == "correctness" && !r.PassedCorrectness(), gate == "all" && !r.Passed:
			failed = append(failed, r.Name)
		case !r.Passed:
			missed = append(missed, r.Name)
		}
	}
	if len(failed) > 0 {
		what := "missed a target"
		if gate == "correctness" {
			what = "missed a correctness target"
		}
		return &exitError{code: 1, err: fmt.Errorf("scenarios that %s or could not run: %s", what, strings.Join(failed, ", "))}
	}
	if len(missed) > 0 {
		fmt.Fprintf(os.Stderr, "chaos: every correctness target of %d scenarios met; latency, success-rate or recovery targets missed (reported, not gated) in: %s\n",
			len(results), strings.Join(missed, ", "))
		return nil
	}
	fmt.Fprintf(os.Stderr, "chaos: every target of %d scenarios met\n", len(results))
	return nil
}

// serveDefaults is the configuration `parley serve` would run with here —
// its flags' defaults and the PARLEY_* variables it reads — for the
// settings the servers built by chaos take from it: the pool wait bound,
// the request deadline, the database budget, the replica lag bound and
// wait, and admission control.
func serveDefaults() (app.Config, error) {
	f := newFlags("serve", "", "", "json")
	var c serveConfig
	bindServeFlags(f, &c)
	if len(f.envErrs) > 0 {
		return app.Config{}, fmt.Errorf("%w: %w", errUsage, errors.Join(f.envErrs...))
	}
	if err := c.finish(); err != nil {
		return app.Config{}, err
	}
	return c.Config, nil
}
