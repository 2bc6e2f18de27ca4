package canary

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/parley-chat/parley/internal/chat"
)

// ErrConfig marks a mistake in a canary configuration (exit status 2).
var ErrConfig = errors.New("canary configuration")

// Config is one canary of one endpoint: how it ramps, what the optimized
// path turns on, and what it is judged on. deploy/canary/*.yaml hold the
// two the seed asks for; LoadConfig reads one and Validate fills defaults.
type Config struct {
	// Endpoint is the rollout switch (message_history, conversation_list,
	// unread_count).
	Endpoint string `yaml:"endpoint" json:"endpoint"`
	// Stages are the percents, increasing, the last 100 (default 10, 25, 50, 100).
	Stages []int `yaml:"stages" json:"stages"`
	// Optimized is what the optimized path uses once a user is in the cohort.
	Optimized struct {
		Cache   bool `yaml:"cache" json:"cache"`
		Replica bool `yaml:"replica" json:"replica"`
	} `yaml:"optimized" json:"optimized"`

	// Interval is the time between two checks (default 30s).
	Interval time.Duration `yaml:"interval" json:"interval"`
	// Window is what each check looks back on (default 4 intervals; at
	// least 4 scrape intervals, or rate() has too few samples).
	Window time.Duration `yaml:"window" json:"window"`
	// Settle is the wait after a stage's PUT before the cohorts are compared:
	// every instance must have applied it and the window must hold only the
	// new stage (default Window + 10s).
	Settle time.Duration `yaml:"settle" json:"settle"`
	// Dwell is how long a stage is judged after it settles before it may
	// advance (default 10m).
	Dwell time.Duration `yaml:"dwell" json:"dwell"`
	// MinChecks is the number of conclusive checks a stage needs before it
	// advances (default 3).
	MinChecks int `yaml:"min_checks" json:"min_checks"`
	// Bake is how long the 100% stage is judged (on the absolute triggers:
	// no baseline cohort is left) before the run is promoted (default 0).
	Bake time.Duration `yaml:"bake" json:"bake"`
	// FailureLimit is the number of failed checks in a row that roll back
	// (default 2; the breaker rolls back on the first).
	FailureLimit int `yaml:"failure_limit" json:"failure_limit"`
	// ErrorLimit is the number of checks in a row that could not query
	// Prometheus before the controller rolls back blind (default 4).
	ErrorLimit int `yaml:"error_limit" json:"error_limit"`
	// InconclusiveLimit is how long a stage may stay inconclusive (too
	// little traffic, no data) before the run pauses for a human (default
	// 3 × Dwell). An inconclusive check never promotes and never fails.
	InconclusiveLimit time.Duration `yaml:"inconclusive_limit" json:"inconclusive_limit"`

	// Selector is extra PromQL label matchers put into every query, e.g.
	// `job="parley"` (default none).
	Selector string `yaml:"selector" json:"selector"`

	// SLO is the endpoint's objective.
	SLO struct {
		// P95 is the latency objective (history: 350ms).
		P95 time.Duration `yaml:"p95" json:"p95"`
	} `yaml:"slo" json:"slo"`

	Triggers Triggers `yaml:"triggers" json:"triggers"`
}

// Triggers are the judge's thresholds, one block per trigger.
type Triggers struct {
	// Errors: the canary's 5xx ratio more than MaxIncrease over the
	// baseline's in the same window, significant at Alpha (exact conditional
	// Poisson test) and at least AbsFloor above it.
	Errors struct {
		Disabled    bool    `yaml:"disabled" json:"disabled,omitempty"`
		MaxIncrease float64 `yaml:"max_increase" json:"max_increase"` // default 0.2
		AbsFloor    float64 `yaml:"abs_floor" json:"abs_floor"`       // default 0.002 (0.2 points)
		Alpha       float64 `yaml:"alpha" json:"alpha"`               // default 0.01
		MinRequests int     `yaml:"min_requests" json:"min_requests"` // per cohort, default 200
	} `yaml:"errors" json:"errors"`
	// Latency: the canary's p95 over SLO.P95 × Factor.
	Latency struct {
		Disabled    bool    `yaml:"disabled" json:"disabled,omitempty"`
		Factor      float64 `yaml:"factor" json:"factor"`             // default 1.2
		MinRequests int     `yaml:"min_requests" json:"min_requests"` // canary requests, default 200
	} `yaml:"latency" json:"latency"`
	// MannWhitney compares the per-interval series of error ratio and p95
	// of the cohorts over the stage (Kayenta's test): it is reported at
	// every check and joins the verdict at the end of the dwell once each
	// series has MinPoints points; it fails when the canary is higher at
	// Alpha and its mean is more than MaxIncrease above the baseline's (and
	// more than 5 ms / 0.2 points above).
	MannWhitney struct {
		Disabled    bool    `yaml:"disabled" json:"disabled,omitempty"`
		MinPoints   int     `yaml:"min_points" json:"min_points"`     // default 20
		Alpha       float64 `yaml:"alpha" json:"alpha"`               // default 0.01
		MaxIncrease float64 `yaml:"max_increase" json:"max_increase"` // default 0.2
	} `yaml:"mann_whitney" json:"mann_whitney"`
	// QueueWait: PgBouncer's queue wait more than MaxIncrease over its
	// average in the RefWindow before the stage, and more than AbsFloor
	// above it.
	QueueWait struct {
		Disabled    bool          `yaml:"disabled" json:"disabled,omitempty"`
		MaxIncrease float64       `yaml:"max_increase" json:"max_increase"` // default 0.5
		AbsFloor    time.Duration `yaml:"abs_floor" json:"abs_floor"`       // default 10ms
		RefWindow   time.Duration `yaml:"ref_window" json:"ref_window"`     // default 5m
	} `yaml:"queue_wait" json:"queue_wait"`
	// Saturation: PgBouncer's pool saturation over Max in K of the last N
	// distinct polls of the PgBouncer monitor (a poll counts once however
	// many checks see it).
	Saturation struct {
		Disabled bool    `yaml:"disabled" json:"disabled,omitempty"`
		Max      float64 `yaml:"max" json:"max"` // default 0.85
		K        int     `yaml:"k" json:"k"`     // default 3
		N        int     `yaml:"n" json:"n"`     // default 5
	} `yaml:"saturation" json:"saturation"`
	// Breaker: any replica circuit breaker opening (or stuck open) rolls
	// back at once.
	Breaker struct {
		Disabled bool `yaml:"disabled" json:"disabled,omitempty"`
	} `yaml:"breaker" json:"breaker"`
}

// EndpointRoutes maps each rollout endpoint to the HTTP routes it governs
// (the route label of parley_http_requests_total).
var EndpointRoutes = map[string][]string{
	chat.EndpointMessageHistory:   {"GET /v1/conversations/{id}/messages"},
	chat.EndpointConversationList: {"GET /v1/conversations", "GET /v1/conversations/{id}"},
	chat.EndpointUnreadCount:      {"GET /v1/unread"},
}

// LoadConfig reads a YAML configuration; unknown keys are errors (a typo
// must not silently drop a threshold). It does not fill defaults: Validate.
func LoadConfig(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("%w: %s: %w", ErrConfig, path, err)
	}
	return c, nil
}

var selectorRE = regexp.MustCompile(`^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*(,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*)*$`)

// Validate fills the defaults and checks every value; an error wraps
// ErrConfig and names the field.
func (c *Config) Validate(scrape time.Duration) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	if _, ok := EndpointRoutes[c.Endpoint]; !ok {
		return bad("endpoint %q: want one of %v", c.Endpoint, chat.RolloutEndpoints())
	}
	if len(c.Stages) == 0 {
		c.Stages = []int{10, 25, 50, 100}
	}
	for i, p := range c.Stages {
		if p < 1 || p > 100 || (i > 0 && p <= c.Stages[i-1]) {
			return bad("stages %v: want increasing percents in 1..100", c.Stages)
		}
	}
	if c.Stages[len(c.Stages)-1] != 100 {
		return bad("stages %v: the last stage must be 100", c.Stages)
	}
	if !c.Optimized.Cache && !c.Optimized.Replica {
		return bad("optimized: turn on cache, replica or both (else both cohorts take the same path)")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if scrape <= 0 {
		scrape = 15 * time.Second
	}
	def(&c.Interval, 30*time.Second)
	def(&c.Window, 4*c.Interval)
	def(&c.Settle, c.Window+10*time.Second)
	def(&c.Dwell, 10*time.Minute)
	def(&c.InconclusiveLimit, 3*c.Dwell)
	switch {
	case c.Interval < time.Second:
		return bad("interval %v: at least 1s", c.Interval)
	case c.Window < 4*scrape:
		return bad("window %v: at least 4 scrape intervals (%v), or rate() sees too few samples", c.Window, 4*scrape)
	case c.Settle < c.Window:
		return bad("settle %v: at least the window (%v), so that a check after it sees only the new stage", c.Settle, c.Window)
	case c.Dwell < 0 || c.Bake < 0 || c.InconclusiveLimit < 0:
		return bad("dwell, bake and inconclusive_limit must not be negative")
	}
	if c.MinChecks == 0 {
		c.MinChecks = 3
	}
	if c.FailureLimit == 0 {
		c.FailureLimit = 2
	}
	if c.ErrorLimit == 0 {
		c.ErrorLimit = 4
	}
	if c.MinChecks < 1 || c.FailureLimit < 1 || c.ErrorLimit < 1 {
		return bad("min_checks, failure_limit and error_limit must be at least 1")
	}
	if c.Selector != "" && !selectorRE.MatchString(c.Selector) {
		return bad("selector %q: want PromQL label matchers such as job=\"parley\",env=~\"prod.*\"", c.Selector)
	}
	if c.SLO.P95 <= 0 {
		return bad("slo.p95 is required (history: 350ms)")
	}
	t := &c.Triggers
	deff := func(f *float64, v float64) {
		if *f == 0 {
			*f = v
		}
	}
	defi := func(i *int, v int) {
		if *i == 0 {
			*i = v
		}
	}
	deff(&t.Errors.MaxIncrease, 0.2)
	deff(&t.Errors.AbsFloor, 0.002)
	deff(&t.Errors.Alpha, 0.01)
	defi(&t.Errors.MinRequests, 200)
	deff(&t.Latency.Factor, 1.2)
	defi(&t.Latency.MinRequests, 200)
	defi(&t.MannWhitney.MinPoints, 20)
	deff(&t.MannWhitney.Alpha, 0.01)
	deff(&t.MannWhitney.MaxIncrease, 0.2)
	deff(&t.QueueWait.MaxIncrease, 0.5)
	def(&t.QueueWait.AbsFloor, 10*time.Millisecond)
	def(&t.QueueWait.RefWindow, 5*time.Minute)
	deff(&t.Saturation.Max, 0.85)
	defi(&t.Saturation.K, 3)
	defi(&t.Saturation.N, 5)
	switch {
	case t.Errors.MaxIncrease < 0 || t.Errors.AbsFloor < 0 || t.Errors.Alpha <= 0 || t.Errors.Alpha >= 1 || t.Errors.MinRequests < 1:
		return bad("triggers.errors: max_increase and abs_floor ≥ 0, 0 < alpha < 1, min_requests ≥ 1")
	case t.Latency.Factor < 1 || t.Latency.MinRequests < 1:
		return bad("triggers.latency: factor ≥ 1, min_requests ≥ 1")
	case t.MannWhitney.MinPoints < 3 || t.MannWhitney.Alpha <= 0 || t.MannWhitney.Alpha >= 1 || t.MannWhitney.MaxIncrease < 0:
		return bad("triggers.mann_whitney: min_points ≥ 3, 0 < alpha < 1, max_increase ≥ 0")
	case t.QueueWait.MaxIncrease < 0 || t.QueueWait.AbsFloor < 0 || t.QueueWait.RefWindow < 4*scrape:
		return bad("triggers.queue_wait: max_increase and abs_floor ≥ 0, ref_window ≥ 4 scrape intervals")
	case t.Saturation.Max <= 0 || t.Saturation.Max > 1 || t.Saturation.K < 1 || t.Saturation.N < t.Saturation.K:
		return bad("triggers.saturation: 0 < max ≤ 1, 1 ≤ k ≤ n")
	}
	return nil
}

// routeMatcher is the PromQL matcher of the endpoint's routes.
func (c *Config) routeMatcher() string {
	routes := EndpointRoutes[c.Endpoint]
	quoted := make([]string, len(routes))
	for i, r := range routes {
		quoted[i] = regexp.QuoteMeta(r)
	}
	return "route=~" + strconv.Quote(strings.Join(quoted, "|"))
}

// StageIndex is the index of percent in Stages, or -1.
func (c *Config) StageIndex(percent int) int { return slices.Index(c.Stages, percent) }

// storedJSON is the configuration as stored with a run (and shown by
// status --json): the YAML keys, durations as "30s".
func (c *Config) storedJSON() ([]byte, error) {
	y, err := yaml.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(y, &m); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	return b, nil
}

// storedConfig reads back what the verbs need of a stored configuration.
type storedConfig struct {
	Stages    []int `json:"stages"`
	Optimized struct {
		Cache   bool `json:"cache"`
		Replica bool `json:"replica"`
	} `json:"optimized"`
}
