package monitor

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// contract is the metric contract (the table in docs/monitoring.md, from the
// design's metrics.md): name → label names. Dashboards and alert rules may
// use only these names (plus a histogram's _bucket/_sum/_count).
var contract = map[string][]string{
	"parley_http_requests_total":               {"route", "code", "cohort"},
	"parley_http_request_duration_seconds":     {"route", "cohort"},
	"parley_db_query_duration_seconds":         {"query", "target"},
	"parley_db_query_errors_total":             {"query", "target", "class"},
	"parley_db_slow_queries_total":             {"query", "target"},
	"parley_db_reads_total":                    {"endpoint", "target", "reason"},
	"parley_db_pool_acquire_duration_seconds":  {"pool"},
	"parley_db_pool_connections":               {"pool", "state"},
	"parley_db_pool_saturation_ratio":          {"pool"},
	"parley_replica_lag_bytes":                 {"replica"},
	"parley_replica_lag_seconds":               {"replica"},
	"parley_replica_breaker_state":             {"replica"},
	"parley_replica_breaker_transitions_total": {"replica", "to"},
	"parley_cache_requests_total":              {"endpoint", "result"},
	"parley_cache_invalidations_total":         {"kind"},
	"parley_cache_up":                          {},
	// Added by this project (the design's metrics.md should list them): the
	// cache's failed Redis operations and its queue of invalidations that did
	// not reach Redis, for ParleyCacheInvalidationsFailing.
	"parley_cache_errors_total":                     {"op"},
	"parley_cache_pending_invalidations":            {},
	"parley_db_table_bloat_ratio":                   {"table"},
	"parley_db_table_bloat_bytes":                   {"table"},
	"parley_db_dead_tuples":                         {"table"},
	"parley_db_live_tuples":                         {"table"},
	"parley_db_last_vacuum_age_seconds":             {"table"},
	"parley_db_last_analyze_age_seconds":            {"table"},
	"parley_db_frozenxid_age":                       {"table"},
	"parley_db_vacuum_running":                      {"table"},
	"parley_db_autovacuum_settings_drift":           {"table"},
	"parley_pgbouncer_pool_saturation_ratio":        {"database"},
	"parley_pgbouncer_queue_wait_seconds":           {"database"},
	"parley_pgbouncer_avg_wait_seconds":             {"database"},
	"parley_pgbouncer_clients":                      {"database", "state"},
	"parley_pgbouncer_servers":                      {"database", "state"},
	"parley_pgbouncer_transactions_per_second":      {"database"},
	"parley_pgbouncer_queries_per_second":           {"database"},
	"parley_pgbouncer_up":                           {},
	"parley_monitor_last_success_timestamp_seconds": {"monitor"},
}

// monitorExtras are metrics this package exports beyond the contract
// (documented in docs/monitoring.md); dashboards and rules do not use them.
var monitorExtras = map[string][]string{
	"parley_db_table_bloat_unavailable_tables": {},
}

var metricName = regexp.MustCompile(`\bparley_[a-z0-9_]+`)

// inContract reports whether a name used in PromQL is a contract metric,
// allowing a histogram's series suffixes.
func inContract(name string) bool {
	if _, ok := contract[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && strings.HasSuffix(base, "_seconds") {
			if _, ok := contract[base]; ok {
				return true
			}
		}
	}
	return false
}

// repoRoot is the directory holding go.mod, found upwards from the test's
// working directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// promtool runs promtool with args in the repository root. CI installs it
// (Debian package prometheus); a missing promtool fails the test.
func promtool(t *testing.T, root string, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (%v): install the Debian package prometheus (apt-get install prometheus)", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

func TestPromtoolChecksDeployFiles(t *testing.T) {
	root := repoRoot(t)
	promtool(t, root, "check", "config", "deploy/prometheus.yml")
	promtool(t, root, "check", "rules", "deploy/alerts.yml")
	promtool(t, root, "test", "rules", "deploy/alerts_test.yml")
}

func TestAlertRulesUseContractMetrics(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	checkNames(t, "deploy/alerts.yml", metricName.FindAllString(string(b), -1))
}

func checkNames(t *testing.T, file string, names []string) {
	t.Helper()
	if len(names) == 0 {
		t.Fatalf("%s uses no parley metric", file)
	}
	for _, n := range names {
		if !inContract(n) {
			t.Errorf("%s uses %s, which is not in the metrics contract", file, n)
		}
	}
}

// The dashboard is valid JSON, uses only contract metrics, and each of its
// queries is valid PromQL (checked by promtool as recording rules, with
// Grafana's variables replaced).
func TestGrafanaDashboard(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "parley-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.Title == "" || dash.UID == "" {
		t.Error("dashboard lacks title or uid")
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			checkNames(t, "dashboard panel "+p.Title, metricName.FindAllString(tg.Expr, -1))
			expr := strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*").Replace(tg.Expr)
			if strings.Contains(expr, "$") {
				t.Errorf("panel %q: unknown variable in %s", p.Title, tg.Expr)
			}
			q, _ := json.Marshal(expr) // a JSON string is a valid YAML scalar
			fmt.Fprintf(&rules, "      - record: dashboard:expr_%d\n        expr: %s\n", n, q)
			n++
		}
	}
	f := filepath.Join(t.TempDir(), "dashboard_rules.yml")
	if err := os.WriteFile(f, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, root, "check", "rules", f)
}

// The metrics this package registers have exactly the contract's names and
// labels (extras are listed in monitorExtras).
func TestMonitorMetricsMatchContract(t *testing.T) {
	reg := prometheus.NewRegistry()
	pool := &pgxpool.Pool{} // never used: nothing polls
	qp, err := NewQueryPerformance(QueryPerformanceOptions{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Registerer: reg, Primary: pool, PgBouncerAdminURL: "postgres://u:p@127.0.0.1:1/pgbouncer", Queries: qp}); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{}
	for name, labels := range contract {
		if strings.HasPrefix(name, "parley_db_") && !strings.HasPrefix(name, "parley_db_reads") && !strings.HasPrefix(name, "parley_db_pool") ||
			strings.HasPrefix(name, "parley_pgbouncer_") || strings.HasPrefix(name, "parley_monitor_") {
			want[name] = labels
		}
	}
	for name, labels := range monitorExtras {
		want[name] = labels
	}
	got := map[string][]string{}
	descs := make(chan *prometheus.Desc, 100)
	go func() {
		// Describe every collector registered above.
		reg.Describe(descs)
		close(descs)
	}()
	for d := range descs {
		name, labels := parseDesc(d.String())
		got[name] = labels
	}
	for name, labels := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s not exported", name)
			continue
		}
		l := slices.Clone(labels)
		sort.Strings(l)
		if !slices.Equal(g, l) {
			t.Errorf("%s labels %v, want %v", name, g, l)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s is exported but not in the contract", name)
		}
	}
}

var (
	descFQName   = regexp.MustCompile(`fqName: "([^"]+)"`)
	descVarLabel = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

// parseDesc reads the name and sorted variable labels from Desc.String().
func parseDesc(s string) (string, []string) {
	name := ""
	if m := descFQName.FindStringSubmatch(s); m != nil {
		name = m[1]
	}
	var labels []string
	if m := descVarLabel.FindStringSubmatch(s); m != nil && strings.TrimSpace(m[1]) != "" {
		for _, l := range strings.Split(m[1], ",") {
			labels = append(labels, strings.TrimSpace(l))
		}
	}
	sort.Strings(labels)
	return name, labels
}
