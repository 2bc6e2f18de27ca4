package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Options configure a run. Zero values take the scenario's defaults.
type Options struct {
	// Target is the base URL of the Parley API (scenarios); several,
	// separated by commas, spread the connections over them (as Targets).
	Target string
	// Targets are more base URLs of the same API (instances sharing one
	// database): connection i goes to target i mod n, and the report has
	// each target's share. The scenario's data is set up through the first.
	Targets      []string
	AdminToken   string // creates the scenario's users
	Scenario     string // built-in name, "all", or a name from ScenarioFile/Scenarios ("" = all of those)
	ScenarioFile string // YAML or JSON file of custom scenarios
	Scenarios    []Scenario

	// URL, with Method/Headers/Body, hammers one URL with no scenario.
	URL     string
	Method  string
	Headers []HeaderField
	Body    []byte

	Closed      bool          // closed model (N connections × pipelining) instead of the open model
	Connections int           // held connections (overrides the scenario, --scale does not apply)
	Pipelining  int           // closed model: outstanding requests per connection
	Duration    time.Duration // timed part (staged scenarios are stretched to fit)
	Rate        float64       // open model: requests per second (stages scale with it)
	Stages      []Stage       // replace the scenario's stages
	Scale       float64       // multiplies the scenario's connections, rate and data (default 1)

	FindMax      bool          // search the highest rate meeting the SLOs (open model)
	StepDuration time.Duration // --find-max step length (default 10s)
	MaxSteps     int           // --find-max step budget (default 12)

	Thresholds          []string // extra gates, e.g. "history:p95<350ms"
	NoDefaultThresholds bool     // drop the scenarios' own gates

	Timeout         time.Duration // per request (default 10s)
	DialTimeout     time.Duration // per connection (default 5s)
	DialConcurrency int           // dials in flight (default 256)
	Seed            uint64        // 0: random
	CPUBudget       float64       // cores the generator may use (default GOMAXPROCS)
	// SchedulerLagLimit is the open-model scheduler's p99 lateness past
	// which the generator calls itself the bottleneck (default 10 ms).
	SchedulerLagLimit time.Duration

	Progress io.Writer // live progress lines (nil: none)
	Logger   *slog.Logger

	hosts []string // the targets' host:port, for the report
}

// targetURLs is Target (split at commas) then Targets, without blanks.
func (o *Options) targetURLs() []string {
	var out []string
	for _, t := range append(strings.Split(o.Target, ","), o.Targets...) {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// parseTargets parses the targets; they must share one base path (the
// workload's requests are built once for all of them).
func parseTargets(urls []string) ([]endpoint, []string, error) {
	eps := make([]endpoint, 0, len(urls))
	hosts := make([]string, 0, len(urls))
	seen := map[string]bool{}
	for _, u := range urls {
		ep, _, err := parseEndpoint(u)
		if err != nil {
			return nil, nil, err
		}
		if len(eps) > 0 && ep.basePath != eps[0].basePath {
			return nil, nil, fmt.Errorf("targets %q and %q have different paths (%q, %q): the targets must be instances of one API", urls[0], u, eps[0].basePath, ep.basePath)
		}
		key := ep.addr + ep.basePath
		if seen[key] {
			return nil, nil, fmt.Errorf("target %q is given twice", u)
		}
		seen[key] = true
		eps = append(eps, ep)
		hosts = append(hosts, ep.host)
	}
	return eps, hosts, nil
}

// RunScenario runs the scenario(s) named by o.Scenario (or the --url mode)
// and returns the report. It is Run under the name the integration tests use.
func RunScenario(ctx context.Context, o Options) (*Report, error) { return Run(ctx, o) }

// Run carries out a load run. It returns an error only when the run could
// not be carried out (bad options, setup failed); failed thresholds show in
// Report.Passed.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.Seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	if o.CPUBudget <= 0 {
		o.CPUBudget = float64(runtime.GOMAXPROCS(0))
	}
	if o.Closed && o.FindMax {
		return nil, fmt.Errorf("--find-max searches an arrival rate: it needs the open model, not --closed")
	}
	if o.Closed && o.Rate > 0 {
		return nil, fmt.Errorf("--rate sets the open model's arrival rate; the closed model (--closed) takes --connections and --pipelining")
	}
	if !o.Closed && o.Pipelining > 1 && o.URL == "" {
		return nil, fmt.Errorf("--pipelining is for the closed model: add --closed")
	}
	limit, err := RaiseOpenFilesLimit()
	if err != nil {
		o.Logger.Warn("could not raise the open-files limit", "err", err)
	}
	rep := &Report{StartedAt: time.Now().UTC(), Generator: GeneratorInfo{
		GOMAXPROCS: runtime.GOMAXPROCS(0), CPUBudget: o.CPUBudget, OpenFilesLimit: limit, Seed: o.Seed,
	}}
	if o.URL != "" {
		sr, err := runURL(ctx, &o, limit)
		if err != nil {
			return nil, err
		}
		rep.Target = hostOnly(o.URL)
		rep.Scenarios = append(rep.Scenarios, sr)
		rep.finish()
		return rep, nil
	}

	list, err := selectScenarios(&o)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(list))
	mixOps := map[string]bool{}
	for _, sc := range list {
		names = append(names, sc.Name)
		for op := range sc.Mix {
			mixOps[op] = true
		}
	}
	if err := checkScopes(o.Thresholds, append(names, builtinNames()...), KnownOps); err != nil {
		return nil, err
	}
	urls := o.targetURLs()
	if len(urls) == 0 {
		return nil, fmt.Errorf("no target: set --target or PARLEY_URL")
	}
	if o.AdminToken == "" {
		return nil, fmt.Errorf("no admin token: set --admin-token or PARLEY_ADMIN_TOKEN (the scenarios create their own users)")
	}
	eps, hosts, err := parseTargets(urls)
	if err != nil {
		return nil, err
	}
	o.hosts = hosts
	rep.Target = strings.Join(hosts, ",")
	for _, sc := range list {
		sr, err := runScenario(ctx, &o, sc, eps, urls[0], limit)
		if err != nil {
			return nil, fmt.Errorf("scenario %s: %w", sc.Name, err)
		}
		rep.Scenarios = append(rep.Scenarios, sr)
		if ctx.Err() != nil {
			break
		}
	}
	rep.finish()
	if ctx.Err() != nil && len(rep.Scenarios) == 0 {
		return nil, ctx.Err()
	}
	return rep, nil
}

func builtinNames() []string { return append([]string(nil), allScenarios...) }

// selectScenarios resolves o.Scenario against the built-ins and the custom
// scenarios.
func selectScenarios(o *Options) ([]Scenario, error) {
	custom := append([]Scenario(nil), o.Scenarios...)
	if o.ScenarioFile != "" {
		fromFile, err := LoadScenarioFile(o.ScenarioFile)
		if err != nil {
			return nil, err
		}
		custom = append(custom, fromFile...)
	}
	builtin := BuiltinScenarios()
	name := strings.TrimSpace(o.Scenario)
	switch {
	case name == "" && len(custom) > 0:
		return custom, nil
	case name == "":
		return nil, fmt.Errorf("no scenario: set --scenario (%s or all), --scenario-file or --url", strings.Join(allScenarios, ", "))
	case name == "all":
		var out []Scenario
		for _, n := range allScenarios {
			out = append(out, builtin[n])
		}
		return out, nil
	}
	var out []Scenario
	for _, n := range strings.Split(name, ",") {
		n = strings.TrimSpace(n)
		if sc, ok := builtin[n]; ok {
			out = append(out, sc)
			continue
		}
		found := false
		for _, sc := range custom {
			if sc.Name == n {
				out = append(out, sc)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown scenario %q (built-in: %s, all)", n, strings.Join(allScenarios, ", "))
		}
	}
	return out, nil
}

func engineCfg(o *Options, eps []endpoint, p *plan, name string) *engineConfig {
	cfg := &engineConfig{
		eps: eps, timeout: o.Timeout, dialConcurrency: o.DialConcurrency, dialTimeout: o.DialTimeout,
		pipelining: p.pipelining, log: o.Logger,
	}
	if o.Progress != nil {
		cfg.progress = progressPrinter(o.Progress, name, p.open)
	}
	return cfg
}

// runScenario sets up one scenario's data through setupURL (the first
// target) and runs its timed part against every target.
func runScenario(ctx context.Context, o *Options, sc Scenario, eps []endpoint, setupURL string, limit uint64) (*ScenarioReport, error) {
	p, err := resolve(sc, o)
	if err != nil {
		return nil, err
	}
	warnFiles(o, p.prof.maxConns(), limit)
	runID := strconv.FormatUint(o.Seed%(36*36*36*36*36*36), 36) + strconv.FormatInt(time.Now().UnixNano()%1296, 36)
	runID = sc.Name[:min(3, len(sc.Name))] + runID
	api := newAPIClient(strings.TrimRight(setupURL, "/"), o.AdminToken, 30*time.Second)
	defer api.close()
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "[%s] setup: creating %d users, %d conversations, %d messages through the API\n",
			sc.Name, p.data.Users, p.data.Conversations, p.data.Messages)
	}
	ds, setup, err := setupData(ctx, api, p.data, runID, o.Seed, o.Progress, sc.Name)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	wl, err := newChatWorkload(ds, sc.Mix, runID, o.Seed, eps[0].basePath)
	if err != nil {
		return nil, err
	}
	sr, err := runPlan(ctx, o, p, wl, eps, &Request{Method: "GET", Path: eps[0].basePath + "/healthz"})
	if err != nil {
		return nil, err
	}
	sr.Setup = &setup
	sr.Description = sc.Description
	return sr, nil
}

// runURL hammers one URL (autocannon/wrk style).
func runURL(ctx context.Context, o *Options, limit uint64) (*ScenarioReport, error) {
	ep, u, err := parseEndpoint(o.URL)
	if err != nil {
		return nil, err
	}
	if err := checkScopes(o.Thresholds, []string{"url"}, []string{strings.ToLower(orDefault(o.Method, "GET"))}); err != nil {
		return nil, err
	}
	rated := o.Rate > 0
	for _, s := range o.Stages {
		rated = rated || s.Rate > 0
	}
	if !rated && !o.FindMax {
		o.Closed = true
	}
	if !o.Closed && o.Pipelining > 1 {
		return nil, fmt.Errorf("--pipelining is for the closed model: drop --rate or add --closed")
	}
	sc := Scenario{Name: "url", Connections: 10, Duration: 10 * time.Second, Pipelining: 1}
	if o.FindMax {
		sc.Thresholds = []string{"error_rate<1%"}
		sc.Rate = 100
	}
	p, err := resolve(sc, o)
	if err != nil {
		return nil, err
	}
	if !o.FindMax {
		p.rpsGate = false
	}
	warnFiles(o, p.prof.maxConns(), limit)
	path := u.RequestURI()
	wl := newFixedWorkload(o.Method, path, o.Headers, o.Body)
	ep.basePath = ""
	o.hosts = []string{ep.host}
	return runPlan(ctx, o, p, wl, []endpoint{ep}, nil)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func warnFiles(o *Options, conns int, limit uint64) {
	if limit > 0 && uint64(conns)+64 > limit {
		msg := fmt.Sprintf("%d connections requested but this process may open only %d files: expect connect errors", conns, limit)
		o.Logger.Warn(msg)
		if o.Progress != nil {
			fmt.Fprintln(o.Progress, "WARNING: "+msg)
		}
	}
}

// runPlan runs the timed part of a resolved plan with a workload.
// keepAlive, if not nil, primes and keeps alive the open model's held
// connections (unrecorded).
func runPlan(ctx context.Context, o *Options, p *plan, wl Workload, eps []endpoint, keepAlive *Request) (*ScenarioReport, error) {
	name := p.sc.Name
	cfg := engineCfg(o, eps, p, name)
	cfg.keepAlive = keepAlive
	if !p.open {
		eng := newClosedEngine(ctx, cfg, wl)
		res := eng.run(ctx, p.prof, newRecorder(wl.Ops(), len(eps)), o.Progress, name)
		return buildScenarioReport(name, p, res, p.gates(0), o), nil
	}
	eng := newOpenEngine(ctx, cfg, wl)
	defer eng.close()
	eng.hold(ctx, p.prof.connsAt(0), o.Progress, name)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if o.FindMax {
		return findMax(ctx, o, p, eng, wl)
	}
	res := eng.run(ctx, p.prof, newRecorder(wl.Ops(), len(eps)))
	sr := buildScenarioReport(name, p, res, p.gates(p.prof.meanRate()), o)
	return sr, nil
}

// ErrThresholds is what callers may wrap when a report did not pass.
var ErrThresholds = errors.New("thresholds failed")
