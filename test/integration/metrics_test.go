package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// contractFamilies are the metric names of the metrics contract (the design's
// metrics.md table, and the last-success gauge it names below the table),
// with their types: a histogram is exported as _bucket, _sum and _count.
var contractFamilies = map[string]string{
	"parley_http_requests_total":                    "counter",
	"parley_http_request_duration_seconds":          "histogram",
	"parley_db_query_duration_seconds":              "histogram",
	"parley_db_query_errors_total":                  "counter",
	"parley_db_slow_queries_total":                  "counter",
	"parley_db_reads_total":                         "counter",
	"parley_db_pool_acquire_duration_seconds":       "histogram",
	"parley_db_pool_connections":                    "gauge",
	"parley_db_pool_saturation_ratio":               "gauge",
	"parley_replica_lag_bytes":                      "gauge",
	"parley_replica_lag_seconds":                    "gauge",
	"parley_replica_breaker_state":                  "gauge",
	"parley_replica_breaker_transitions_total":      "counter",
	"parley_cache_requests_total":                   "counter",
	"parley_cache_invalidations_total":              "counter",
	"parley_cache_up":                               "gauge",
	"parley_db_table_bloat_ratio":                   "gauge",
	"parley_db_table_bloat_bytes":                   "gauge",
	"parley_db_dead_tuples":                         "gauge",
	"parley_db_live_tuples":                         "gauge",
	"parley_db_last_vacuum_age_seconds":             "gauge",
	"parley_db_last_analyze_age_seconds":            "gauge",
	"parley_db_frozenxid_age":                       "gauge",
	"parley_db_vacuum_running":                      "gauge",
	"parley_db_autovacuum_settings_drift":           "gauge",
	"parley_pgbouncer_pool_saturation_ratio":        "gauge",
	"parley_pgbouncer_queue_wait_seconds":           "gauge",
	"parley_pgbouncer_avg_wait_seconds":             "gauge",
	"parley_pgbouncer_clients":                      "gauge",
	"parley_pgbouncer_servers":                      "gauge",
	"parley_pgbouncer_transactions_per_second":      "gauge",
	"parley_pgbouncer_queries_per_second":           "gauge",
	"parley_pgbouncer_up":                           "gauge",
	"parley_monitor_last_success_timestamp_seconds": "gauge",
	"parley_rollout_percent":                        "gauge", // docs/cache-and-rollouts.md
	"parley_db_spillover_rejected_total":            "counter",
	"parley_cache_pending_invalidations":            "gauge",
	"go_goroutines":                                 "gauge", // runtime and process collectors stay on
	"process_open_fds":                              "gauge",
	"parley_db_spillover_limit":                     "gauge",
	"parley_cache_errors_total":                     "counter",
	"parley_rollout_cache_enabled":                  "gauge",
	"parley_rollout_replica_enabled":                "gauge",
	"parley_db_table_bloat_unavailable_tables":      "gauge",
	"parley_db_spillover_in_flight":                 "gauge",
	"parley_rollout_poll_errors_total":              "counter",
	"parley_db_replica_position_checks_total":       "counter", // docs/routing.md, "Position check"
}

// optionalFamilies appear only once something happened (an error, a
// rejection): not required of a healthy run.
var optionalFamilies = map[string]bool{
	"parley_db_spillover_rejected_total": true,
	"parley_cache_errors_total":          true,
	"parley_rollout_poll_errors_total":   true,
}

// TestMetricsContract scrapes /metrics of an instance wired as `parley
// serve` (monitors and PgBouncer's included) after exercising it — reads
// from the primary, the replica and the cache, writes, admin calls, a query
// cut short by its client — and requires every family of the contract.
func TestMetricsContract(t *testing.T) {
	svc := newService(t)
	ctx := context.Background()
	// Statistics for the vacuum-health monitor: a vacuumed, analyzed schema.
	seed := svc.instance()
	alice, bob := seed.CreateUser(), seed.CreateUser()
	conv := seed.CreateConversation(alice, "metrics", bob)
	for i := range 20 {
		seed.Send(conv.ID, []user{alice, bob}[i%2], fmt.Sprint("m", i))
	}
	for _, sql := range []string{`VACUUM ANALYZE`} {
		if _, err := svc.pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}

	a := svc.instance(instanceOptions{monitors: true})
	path := "/v1/conversations/" + conv.ID + "/messages"
	svc.optimize(a, false, true)
	stacktest.WaitFor(t, 3*time.Second, "a replica read", func() bool {
		return a.Must(200, a.Do("GET", path, bob.Token, nil)).Source() == "replica"
	})
	svc.optimize(a, true, true)
	for range 3 {
		for _, p := range []string{path, "/v1/conversations", "/v1/unread"} {
			a.Must(200, a.Do("GET", p, bob.Token, nil))
		}
	}
	a.Must(200, a.Do("GET", path, bob.Token, nil, "X-Consistency", "strong"))
	a.Send(conv.ID, alice, "after")
	a.Must(200, a.Do("GET", "/admin/status", adminToken, nil))

	// A send whose client gives up while the conversation row is locked:
	// the write runs on, detached from the client, until its database
	// budget (1.5 s, class "timeout") or the role's lock_timeout (500 ms,
	// SQLSTATE 55P03, class "55") ends it — the latter where the role's
	// settings of migration 0070 apply (a database copied from the test
	// template does not copy ALTER ROLE … IN DATABASE).
	tx, err := svc.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM conversations WHERE id = $1::bigint FOR UPDATE`, conv.ID); err != nil {
		t.Fatal(err)
	}
	impatient := &http.Client{Timeout: 300 * time.Millisecond}
	req, _ := http.NewRequest("POST", a.Base+path, strings.NewReader(`{"body":"abandoned"}`))
	req.Header.Set("Authorization", "Bearer "+alice.Token)
	if resp, err := impatient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the send did not wait for the lock: %d", resp.StatusCode)
	}
	stacktest.WaitFor(t, 5*time.Second, "the cancelled query to be counted", func() bool {
		return counterMetric(t, a.reg, "parley_db_query_errors_total", map[string]string{"query": "send_message"}) > 0
	})
	_ = tx.Rollback(ctx)

	var families map[string]string
	var body string
	stacktest.WaitFor(t, 30*time.Second, "every contract family on /metrics", func() bool {
		families, body = scrape(t, a.Base+"/metrics")
		for name := range contractFamilies {
			if _, ok := families[name]; !ok && !optionalFamilies[name] {
				return false
			}
		}
		return true
	})
	for name, typ := range contractFamilies {
		got, ok := families[name]
		switch {
		case !ok && optionalFamilies[name]:
		case !ok:
			t.Errorf("/metrics lacks %s", name)
		case got != typ:
			t.Errorf("%s is a %s, want %s", name, got, typ)
		case typ == "histogram":
			for _, suffix := range []string{"_bucket{", "_sum", "_count"} {
				if !strings.Contains(body, "\n"+name+suffix) {
					t.Errorf("histogram %s has no %s series", name, suffix)
				}
			}
		}
	}
	for _, series := range []string{
		`parley_db_reads_total{endpoint="message_history",reason="hit",target="cache"}`,
		`parley_db_reads_total{endpoint="message_history",reason="strong",target="primary"}`,
		`cohort="optimized"`,
		`parley_db_query_duration_seconds_count{query="history_page",target="replica"}`,
	} {
		if !strings.Contains(body, series) {
			t.Errorf("/metrics has no %s", series)
		}
	}
	if !strings.Contains(body, `parley_db_query_errors_total{class="timeout",query="send_message",target="primary"} 1`) &&
		!strings.Contains(body, `parley_db_query_errors_total{class="55",query="send_message",target="primary"} 1`) {
		t.Errorf("/metrics does not count the abandoned send's end (class timeout or 55):\n%s", grepLines(body, "parley_db_query_errors_total{"))
	}
	t.Logf("%d metric families exported, all %d of the contract present", len(families), len(contractFamilies)-len(optionalFamilies))
}

// scrape returns the families of a Prometheus text exposition (name → type)
// and the text.
func scrape(t *testing.T, url string) (map[string]string, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = f[3]
		}
	}
	return out, "\n" + string(b)
}

// designFamilies are the families of the design's metrics.md table (and the
// last-success gauge it names): a fresh server exports every one of them
// before any traffic, its label values known in advance at zero.
var designFamilies = []string{
	"parley_http_requests_total", "parley_http_request_duration_seconds",
	"parley_db_query_duration_seconds", "parley_db_query_errors_total", "parley_db_slow_queries_total",
	"parley_db_reads_total", "parley_db_pool_acquire_duration_seconds", "parley_db_pool_connections",
	"parley_db_pool_saturation_ratio", "parley_replica_lag_bytes", "parley_replica_lag_seconds",
	"parley_replica_breaker_state", "parley_replica_breaker_transitions_total",
	"parley_cache_requests_total", "parley_cache_invalidations_total", "parley_cache_up",
	"parley_db_table_bloat_ratio", "parley_db_table_bloat_bytes", "parley_db_dead_tuples", "parley_db_live_tuples",
	"parley_db_last_vacuum_age_seconds", "parley_db_last_analyze_age_seconds", "parley_db_frozenxid_age",
	"parley_db_vacuum_running", "parley_db_autovacuum_settings_drift",
	"parley_pgbouncer_pool_saturation_ratio", "parley_pgbouncer_queue_wait_seconds", "parley_pgbouncer_avg_wait_seconds",
	"parley_pgbouncer_clients", "parley_pgbouncer_servers", "parley_pgbouncer_transactions_per_second",
	"parley_pgbouncer_queries_per_second", "parley_pgbouncer_up",
	"parley_monitor_last_success_timestamp_seconds",
}

// TestMetricsOnFreshServer: before any request, /metrics already has every
// family of the contract (dashboards and alert rules must not see a family
// appear only once something went wrong), with the error series at zero.
func TestMetricsOnFreshServer(t *testing.T) {
	svc := newService(t)
	a := svc.instance(instanceOptions{monitors: true})
	// The monitors' first polls run at start; give them a few seconds.
	var missing []string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		families, _ := scrape(t, a.Base+"/metrics")
		missing = missing[:0]
		for _, name := range designFamilies {
			if _, ok := families[name]; !ok {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(missing) > 0 {
		t.Fatalf("a fresh server lacks %v", missing)
	}
	_, body := scrape(t, a.Base+"/metrics")
	for _, series := range []string{
		`parley_http_requests_total{code="500",cohort="optimized",route="GET /v1/conversations/{id}/messages"} 0`,
		`parley_http_requests_total{code="503",cohort="baseline",route="POST /v1/conversations/{id}/messages"} 0`,
		`parley_cache_requests_total{endpoint="message_history",result="hit"} 0`,
		`parley_replica_breaker_transitions_total{replica="replica1",to="open"} 0`,
	} {
		if !strings.Contains(body, "\n"+series+"\n") {
			t.Errorf("a fresh server has no %s", series)
		}
	}
}

// grepLines is the lines of text that start with prefix.
func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
