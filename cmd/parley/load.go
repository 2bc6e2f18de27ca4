package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/loadgen"
)

func init() {
	register(command{name: "load", summary: "load generator: built-in scenarios, SLO gates, JSON/HTML reports", run: runLoad})
}

const loadDescription = `
Generates load against a Parley API and gates on SLOs.

Two load models:
  open (default)  requests arrive at --rate per second whatever the server does;
                  latency counts from each request's INTENDED send time (wrk2's
                  model), so a stall shows as it would to users; late and dropped
                  sends are counted and reported.
  closed          --closed: --connections keep-alive connections, each with up to
                  --pipelining requests outstanding, sending the next as soon as a
                  response arrives (autocannon/wrk); measures raw capacity. Every
                  pipelined request is timed on its own.

Scenarios (each creates its own users, conversations and Zipf-skewed history
through the API first, then holds its connections and offers load):
  history  history pages with real cursors; 5k connections; p95 <= 350ms
  send     sends with unique Idempotency-Keys; 5k connections; p95 <= 250ms
  mixed    70% reads / 30% sends; 8k connections; p95 <= 300ms
  spike    mixed, 5k conns for 2m -> 10k over 1m -> hold 5m -> down over 1m;
           no errors, p95 within SLO
  all      the four in turn
Defaults come from the seed's load plan; --duration, --connections, --rate and
--scale shrink or grow them. --scenario-file runs custom mixes (YAML or JSON).
--find-max searches the highest rate that still meets the SLOs (capacity_rps).

  parley load --url URL [--closed --connections N --pipelining P --duration D | --rate R]
hammers one URL with no scenario, as autocannon and wrk do.

Several instances of one API (parley dev --instances 2):
  parley load --target http://127.0.0.1:8080,http://127.0.0.1:8081 ...
spreads the connections evenly (connection i to target i mod n) and reports
requests, errors and latency per target as well as in total.

Thresholds: [scope:]metric<value, metric one of p50 p90 p95 p99 p99.9 max mean
(latency, e.g. 350ms), error_rate (e.g. 1%), errors, requests, rps; operators
< <= > >=; scope a scenario or an operation (history, history_deep, send,
conversation_list, unread). Exit status: 0 pass, 99 a threshold failed, 1 any
other failure, 2 bad flags.`

type loadFlags struct {
	o                       loadgen.Options
	targets                 []string
	headers, stages, thresh []string
	body                    string
	seed                    uint64
	jsonPath, htmlPath      string
	quiet                   bool
	trivial                 string
	list                    bool
}

func newLoadFlags(f *loadFlags) *flags {
	fs := newFlags("load", "--target URL[,URL…] --admin-token TOKEN --scenario NAME [flags]", loadDescription, "text")
	o := &f.o
	fs.Values(&f.targets, "target", "PARLEY_URL", ",", "base URL of the Parley API; several (instances of one API, e.g. parley dev --instances 2) spread the connections over them, connection i to target i mod n, with per-target figures in the report (the data is set up through the first)")
	fs.Secret(&o.AdminToken, "admin-token", "PARLEY_ADMIN_TOKEN", "admin token; the scenarios create their users with it")
	fs.String(&o.Scenario, "scenario", "PARLEY_LOAD_SCENARIO", "", "scenario: history, send, mixed, spike, all, a name from --scenario-file, or a comma-separated list")
	fs.String(&o.ScenarioFile, "scenario-file", "PARLEY_LOAD_SCENARIO_FILE", "", "YAML or JSON file of custom scenarios (mix weights of history, history_deep, send, conversation_list, unread; connections, rate, duration, stages, thresholds, data)")
	fs.String(&o.URL, "url", "PARLEY_LOAD_URL", "", "hammer this one URL instead of a scenario (closed model unless --rate)")
	fs.String(&o.Method, "method", "PARLEY_LOAD_METHOD", "GET", "--url mode: request method")
	fs.List(&f.headers, "header", "PARLEY_LOAD_HEADERS", ";", "--url mode: extra request header 'Name: value', repeatable")
	fs.String(&f.body, "body", "PARLEY_LOAD_BODY", "", "--url mode: request body")
	fs.Bool(&o.Closed, "closed", "PARLEY_LOAD_CLOSED", false, "closed model: connections x pipelining, as fast as the server answers")
	fs.Int(&o.Connections, "connections", "PARLEY_LOAD_CONNECTIONS", 0, "connections to hold (default: the scenario's, times --scale; 10 with --url)")
	fs.Int(&o.Pipelining, "pipelining", "PARLEY_LOAD_PIPELINING", 0, "closed model: requests outstanding per connection (default: the scenario's with --closed, else 1)")
	fs.Duration(&o.Duration, "duration", "PARLEY_LOAD_DURATION", 0, "timed part per scenario (default: the scenario's, 5m; staged scenarios are stretched to fit; 10s with --url)")
	fs.Float(&o.Rate, "rate", "PARLEY_LOAD_RATE", 0, "open model: requests per second (default: the scenario's, times --scale; stages scale along)")
	fs.List(&f.stages, "stage", "PARLEY_LOAD_STAGES", ";", "a stage 'DURATION[,conns=N][,rate=R]' (ramps linearly from the previous stage), repeatable; replaces the scenario's stages")
	fs.Float(&o.Scale, "scale", "PARLEY_LOAD_SCALE", 1, "multiply the scenarios' connections, rate and data size")
	fs.Bool(&o.FindMax, "find-max", "PARLEY_LOAD_FIND_MAX", false, "search the highest offered rate that meets the SLOs, report it as capacity_rps")
	fs.Duration(&o.StepDuration, "step-duration", "PARLEY_LOAD_STEP_DURATION", 10*time.Second, "--find-max: length of each step")
	fs.Int(&o.MaxSteps, "max-steps", "PARLEY_LOAD_MAX_STEPS", 12, "--find-max: most steps to run")
	fs.List(&f.thresh, "threshold", "PARLEY_LOAD_THRESHOLDS", ";", "an SLO gate such as 'history:p95<350ms', 'error_rate<1%' or 'rps>100', repeatable; a failed gate exits 99")
	fs.Bool(&o.NoDefaultThresholds, "no-default-thresholds", "PARLEY_LOAD_NO_DEFAULT_THRESHOLDS", false, "drop the scenarios' own SLO gates, keep only --threshold")
	fs.Duration(&o.Timeout, "timeout", "PARLEY_LOAD_TIMEOUT", 10*time.Second, "per-request timeout")
	fs.Duration(&o.DialTimeout, "dial-timeout", "PARLEY_LOAD_DIAL_TIMEOUT", 5*time.Second, "per-connection dial timeout")
	fs.Int(&o.DialConcurrency, "dial-concurrency", "PARLEY_LOAD_DIAL_CONCURRENCY", 256, "connections dialled at once")
	fs.Float(&o.CPUBudget, "cpu-budget", "PARLEY_LOAD_CPU_BUDGET", 0, "cores the generator may use before it warns that it is the bottleneck (default GOMAXPROCS)")
	fs.Uint64(&f.seed, "seed", "PARLEY_LOAD_SEED", 0, "random seed, for repeatable mixes (0: random)")
	fs.String(&f.jsonPath, "json", "PARLEY_LOAD_JSON", "", "write the JSON report to this file")
	fs.String(&f.htmlPath, "html", "PARLEY_LOAD_HTML", "", "write a self-contained HTML report to this file")
	fs.Bool(&f.quiet, "quiet", "PARLEY_LOAD_QUIET", false, "no live progress lines on stderr")
	fs.Bool(&f.list, "list", "PARLEY_LOAD_LIST", false, "list the built-in scenarios and exit")
	fs.String(&f.trivial, "trivial-server", "PARLEY_LOAD_TRIVIAL_SERVER", "", "serve a trivial endpoint on ADDR until interrupted (the neutral target of scripts/bench-loadgen.sh); no load is generated")
	return fs
}

func runLoad(ctx context.Context, args []string) error {
	var f loadFlags
	fs := newLoadFlags(&f)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if f.trivial != "" {
		_, _ = loadgen.RaiseOpenFilesLimit()
		return loadgen.ServeTrivial(ctx, f.trivial, func(a net.Addr) {
			fmt.Fprintf(os.Stderr, "parley load: trivial server listening on %s\n", a)
		})
	}
	if f.list {
		listScenarios(os.Stdout)
		return nil
	}
	o := &f.o
	o.Target, o.Targets = "", f.targets
	o.Seed = f.seed
	o.Logger = slog.Default()
	if !f.quiet {
		o.Progress = os.Stderr
	}
	if f.body != "" {
		o.Body = []byte(f.body)
	}
	for _, h := range f.headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return fmt.Errorf("%w: --header %q: want 'Name: value'", errUsage, h)
		}
		o.Headers = append(o.Headers, loadgen.HeaderField{Name: strings.TrimSpace(name), Value: strings.TrimSpace(value)})
	}
	for _, s := range f.stages {
		st, err := loadgen.ParseStage(s)
		if err != nil {
			return fmt.Errorf("%w: --stage: %v", errUsage, err)
		}
		o.Stages = append(o.Stages, st)
	}
	for _, t := range f.thresh {
		if _, err := loadgen.ParseThreshold(t); err != nil {
			return fmt.Errorf("%w: --threshold: %v", errUsage, err)
		}
	}
	o.Thresholds = f.thresh
	if o.URL == "" && o.Scenario == "" && o.ScenarioFile == "" {
		return fmt.Errorf("%w: set --scenario (history, send, mixed, spike, all), --scenario-file or --url", errUsage)
	}
	if o.URL != "" && (o.Scenario != "" || o.ScenarioFile != "") {
		return fmt.Errorf("%w: --url hammers one URL; it does not combine with --scenario or --scenario-file", errUsage)
	}

	rep, err := loadgen.Run(ctx, *o)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	rep.WriteText(os.Stdout)
	if f.jsonPath != "" {
		if err := rep.WriteJSONFile(f.jsonPath); err != nil {
			return err
		}
	}
	if f.htmlPath != "" {
		if err := rep.WriteHTMLFile(f.htmlPath); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("load: interrupted: %w", ctx.Err())
	}
	if !rep.Passed {
		failed := rep.FailedThresholds()
		return &exitError{code: 99, err: fmt.Errorf("%w: %s", loadgen.ErrThresholds, strings.Join(failed, "; "))}
	}
	return nil
}

func listScenarios(w io.Writer) {
	b := loadgen.BuiltinScenarios()
	for _, name := range []string{"history", "send", "mixed", "spike"} {
		sc := b[name]
		fmt.Fprintf(w, "%-8s %s\n         %d connections, %g req/s, %s; closed-model pipelining %d; gates %s\n",
			name, sc.Description, sc.Connections, sc.Rate, sc.Duration, sc.Pipelining, strings.Join(sc.Thresholds, ", "))
	}
}
