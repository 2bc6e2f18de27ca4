package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parley-chat/parley/internal/canary"
	"github.com/parley-chat/parley/internal/stack"
)

func init() {
	register(command{name: "canary", summary: "metric-driven rollout of an endpoint's optimized read path: run|status|pause|resume|promote|abort", run: runCanary})
}

const canaryHelp = `Ramp an endpoint's optimized read path (PUT /admin/rollouts/{endpoint}: percent,
cache, replica) stage by stage (default 10, 25, 50, 100 %), judge it on
Prometheus every interval, and roll it back by itself:

  run      drive the canary of --config (deploy/canary/*.yaml) to 100 % or back
           to 0 %; a live run of the endpoint left by a stopped controller is
           resumed at its stage (or its rollback finished)
  status   the latest run of each endpoint (or --endpoint's): state, stage,
           stages, the last decisions with their values (--json: everything,
           measurements and queries included)
  pause    no more advancing (the triggers still roll back)
  resume   advance again
  promote  skip to 100 % now
  abort    roll back to 0 % now

The judge compares the cohorts (cohort="optimized" vs "baseline") in the same
window: the 5xx ratio (exact Poisson ratio test, +20 % allowed, an absolute
floor), the p95 against the SLO × 1.2, the per-interval series with a
Mann-Whitney U test; and the shared resources: PgBouncer's queue wait (+50 %
over the window before the stage), pool saturation (> 85 % in k of n polls),
any replica breaker opening (immediate rollback). Too few requests in a
cohort is inconclusive: the stage holds, never advances, never fails. Runs,
stages and every decision (queries, values per cohort, sample counts,
verdict) are stored in PostgreSQL; one controller drives an endpoint at a
time (an advisory lock on the primary, so --database-url must be direct, not
through PgBouncer's transaction pooling).

With a local stack (parley dev), --prometheus, --database-url and
--admin-token default to the data dir's.

Exit status (run): 0 promoted to 100 %; 3 rolled back on a verdict (or
aborted); 1 any other failure (Prometheus, the API or the database failing,
another controller holding the lease, a blind rollback after query errors,
interrupted); 2 bad flags or configuration.`

type canaryFlags struct {
	config, endpoint, prometheus, target, adminToken, databaseURL, dataDir, metricsAddr string
	scrape, interval, window, settle, dwell, bake                                       time.Duration
	minRequests, decisions                                                              int
	dryRun, asJSON                                                                      bool
	set                                                                                 map[string]bool // flags given on the command line
}

func runCanary(ctx context.Context, args []string) error {
	f := newFlags("canary", "run|status|pause|resume|promote|abort [flags]", canaryHelp, "text")
	var o canaryFlags
	f.String(&o.config, "config", "PARLEY_CANARY_CONFIG", "", "run: the canary's YAML configuration (deploy/canary/message-history.yaml, conversation-list.yaml)")
	f.String(&o.endpoint, "endpoint", "PARLEY_CANARY_ENDPOINT", "", "the endpoint (message_history, conversation_list, unread_count); run: overrides the configuration's")
	f.String(&o.prometheus, "prometheus", "PARLEY_PROMETHEUS_URL", "", "Prometheus's base URL (default: the local stack's)")
	f.String(&o.target, "target", "PARLEY_URL", "http://127.0.0.1:8080", "base URL of a Parley instance whose admin API changes the rollout")
	f.Secret(&o.adminToken, "admin-token", "PARLEY_ADMIN_TOKEN", "admin bearer token (default: <data dir>/admin-token)")
	f.Secret(&o.databaseURL, "database-url", "PARLEY_PRIMARY_URL", "the primary PostgreSQL, direct (runs, decisions, the lease; default: the local stack's)")
	f.String(&o.dataDir, "data-dir", "PARLEY_DATA_DIR", ".parley", "local stack data directory, for the defaults above")
	f.Duration(&o.scrape, "scrape-interval", "PARLEY_PROMETHEUS_SCRAPE_INTERVAL", 0, "Prometheus's scrape interval (default: 1s with the local stack, else 15s); windows must hold 4")
	f.Duration(&o.interval, "interval", "PARLEY_CANARY_INTERVAL", 0, "run: override the configuration's check interval")
	f.Duration(&o.window, "window", "PARLEY_CANARY_WINDOW", 0, "run: override the configuration's query window")
	f.Duration(&o.settle, "settle", "PARLEY_CANARY_SETTLE", 0, "run: override the configuration's settle time after each change")
	f.Duration(&o.dwell, "dwell", "PARLEY_CANARY_DWELL", 0, "run: override the configuration's dwell per stage")
	f.Duration(&o.bake, "bake", "PARLEY_CANARY_BAKE", 0, "run: override the configuration's bake at 100% (0 turns it off)")
	f.Int(&o.minRequests, "min-requests", "PARLEY_CANARY_MIN_REQUESTS", 0, "run: override the requests per cohort the error and latency triggers need")
	f.Bool(&o.dryRun, "dry-run", "PARLEY_CANARY_DRY_RUN", false, "run: judge and report (and store the run as a dry run) without changing any rollout")
	f.String(&o.metricsAddr, "metrics-addr", "PARLEY_CANARY_METRICS_ADDR", "", "run: serve the controller's metrics (parley_canary_*) on this address; with a local stack its Prometheus scrapes them")
	f.Bool(&o.asJSON, "json", "PARLEY_CANARY_JSON", false, "status: print JSON")
	f.Int(&o.decisions, "decisions", "PARLEY_CANARY_DECISIONS", 10, "status: the last decisions shown per run")
	if len(args) == 0 {
		f.Usage()
		return fmt.Errorf("%w: canary needs a subcommand: run, status, pause, resume, promote or abort", errUsage)
	}
	sub := args[0]
	if sub == "-h" || sub == "--help" {
		f.SetOutput(os.Stdout)
		f.Usage()
		return nil
	}
	if err := f.Parse(args[1:]); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, f.Args())
	}
	o.set = map[string]bool{}
	f.Visit(func(fl *flag.Flag) { o.set[fl.Name] = true })
	switch sub {
	case "run", "status", "pause", "resume", "promote", "abort":
	default:
		return fmt.Errorf("%w: unknown canary subcommand %q (want run, status, pause, resume, promote or abort)", errUsage, sub)
	}
	local := o.localDefaults()
	var cfg canary.Config
	if sub == "run" {
		var err error
		if cfg, err = o.loadConfig(); err != nil {
			return err
		}
	}
	if sub != "run" && sub != "status" && o.endpoint == "" {
		return fmt.Errorf("%w: %s needs --endpoint", errUsage, sub)
	}
	if o.databaseURL == "" {
		return fmt.Errorf("%w: --database-url (or PARLEY_PRIMARY_URL) is required without a local stack in --data-dir", errUsage)
	}
	store, err := canary.OpenStore(ctx, o.databaseURL)
	if err != nil {
		return canaryErr(err)
	}
	defer store.Close()
	switch sub {
	case "run":
		return o.run(ctx, store, local, cfg)
	case "status":
		return o.status(ctx, store)
	}
	if o.adminToken == "" && (sub == "promote" || sub == "abort") {
		return fmt.Errorf("%w: --admin-token (or PARLEY_ADMIN_TOKEN) is required for %s", errUsage, sub)
	}
	msg, err := canary.Command(ctx, store, canary.NewAdminClient(o.target, o.adminToken), o.endpoint, sub, owner())
	if err != nil {
		return canaryErr(err)
	}
	fmt.Println(msg)
	return nil
}

// localDefaults fills the connections left unset from the local stack in
// the data dir, when there is one; it reports whether there was.
func (o *canaryFlags) localDefaults() *stack.Stack {
	s, err := stack.Open(o.dataDir)
	if err != nil {
		if o.scrape == 0 {
			o.scrape = 15 * time.Second
		}
		return nil
	}
	if o.prometheus == "" {
		o.prometheus = s.PrometheusURL()
	}
	if o.databaseURL == "" {
		o.databaseURL = s.PrimaryURL()
	}
	if o.adminToken == "" {
		if b, err := os.ReadFile(filepath.Join(s.Dir, "admin-token")); err == nil {
			o.adminToken = strings.TrimSpace(string(b))
		}
	}
	if o.scrape == 0 {
		o.scrape = stack.ScrapeInterval
	}
	return s
}

func owner() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}

// canaryErr maps the package's configuration errors to usage errors (exit 2).
func canaryErr(err error) error {
	if errors.Is(err, canary.ErrConfig) {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	return err
}

// config loads --config with the command line's overrides, validated.
func (o *canaryFlags) loadConfig() (canary.Config, error) {
	if o.config == "" {
		return canary.Config{}, fmt.Errorf("%w: run needs --config FILE (deploy/canary/message-history.yaml, conversation-list.yaml)", errUsage)
	}
	cfg, err := canary.LoadConfig(o.config)
	if err != nil {
		return cfg, canaryErr(err)
	}
	if o.endpoint != "" {
		cfg.Endpoint = o.endpoint
	}
	for _, ov := range []struct {
		dst *time.Duration
		v   time.Duration
	}{{&cfg.Interval, o.interval}, {&cfg.Window, o.window}, {&cfg.Settle, o.settle}, {&cfg.Dwell, o.dwell}} {
		if ov.v > 0 {
			*ov.dst = ov.v
		}
	}
	if o.set["bake"] || o.bake > 0 { // --bake 0 turns the configuration's bake off
		cfg.Bake = o.bake
	}
	if o.minRequests > 0 {
		cfg.Triggers.Errors.MinRequests, cfg.Triggers.Latency.MinRequests = o.minRequests, o.minRequests
	}
	if err := cfg.Validate(o.scrape); err != nil {
		return cfg, canaryErr(err)
	}
	return cfg, nil
}

func (o *canaryFlags) run(ctx context.Context, store *canary.Store, local *stack.Stack, cfg canary.Config) error {
	switch {
	case o.prometheus == "":
		return fmt.Errorf("%w: --prometheus (or PARLEY_PROMETHEUS_URL) is required without a local stack in --data-dir", errUsage)
	case o.adminToken == "":
		return fmt.Errorf("%w: --admin-token (or PARLEY_ADMIN_TOKEN) is required", errUsage)
	}
	reg := prometheus.NewRegistry()
	if o.metricsAddr != "" {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		ln, err := net.Listen("tcp", o.metricsAddr)
		if err != nil {
			return fmt.Errorf("%w: --metrics-addr: %v", errUsage, err)
		}
		srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		if local != nil {
			if remove, err := local.RegisterTarget(fmt.Sprintf("canary-%d", os.Getpid()), ln.Addr().String(), map[string]string{"component": "canary"}); err == nil {
				defer remove()
			}
		}
		slog.Info("controller metrics", "addr", ln.Addr().String())
	}
	res, err := canary.RunCanary(ctx, cfg, store, canary.Options{
		Prometheus: o.prometheus, Scrape: o.scrape, Target: o.target, AdminToken: o.adminToken,
		DryRun: o.dryRun, Owner: owner(), Out: os.Stdout, Logger: slog.Default(), Registerer: reg,
	})
	if err != nil {
		return canaryErr(err)
	}
	switch {
	case res.Outcome == canary.Promoted:
		return nil
	case res.Blind:
		return &exitError{code: 1, err: fmt.Errorf("run %d rolled back blind (the judge could not query Prometheus): %s", res.RunID, res.Reason)}
	default:
		return &exitError{code: 3, err: fmt.Errorf("run %d rolled back (%s): %s", res.RunID, res.Trigger, res.Reason)}
	}
}

func (o *canaryFlags) status(ctx context.Context, store *canary.Store) error {
	sts, err := canary.Status(ctx, store, o.endpoint, o.decisions)
	if err != nil {
		return canaryErr(err)
	}
	if o.asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if sts == nil {
			sts = []canary.RunStatus{}
		}
		return enc.Encode(sts)
	}
	if len(sts) == 0 {
		fmt.Println("no canary runs")
		return nil
	}
	for _, st := range sts {
		r := st.Run
		kind := ""
		if r.DryRun {
			kind = " (dry run)"
		}
		fmt.Printf("%s: run %d%s %s at %d%% (stage %d), started %s\n", r.Endpoint, r.ID, kind, strings.ToUpper(r.State), r.StagePercent,
			r.StageIndex+1, r.CreatedAt.Local().Format(time.DateTime))
		if r.Trigger != nil {
			fmt.Printf("  trigger %s: %s\n", *r.Trigger, deref(r.Reason))
		}
		if r.Live() {
			if st.Controller != "" {
				fmt.Printf("  driven by %s\n", st.Controller)
			} else {
				fmt.Println("  no controller drives it: 'parley canary run' with its configuration resumes it")
			}
		}
		var stages []string
		for _, s := range st.Stages {
			stages = append(stages, fmt.Sprintf("%d%%:%s", s.Percent, derefOr(s.Outcome, "current")))
		}
		fmt.Printf("  stages %s\n", strings.Join(stages, " → "))
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  TIME\tPERCENT\tVERDICT\tACTION\tTRIGGER\tREASON")
		for _, d := range st.Decisions {
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\n", d.At.Local().Format(time.TimeOnly), d.StagePercent, d.Verdict, d.Action, d.Trigger, d.Reason)
		}
		tw.Flush()
	}
	return nil
}

func deref(s *string) string { return derefOr(s, "") }

func derefOr(s *string, def string) string {
	if s == nil {
		return def
	}
	return *s
}
