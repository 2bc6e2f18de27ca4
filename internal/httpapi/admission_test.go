package httpapi

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parley-chat/parley/internal/admission"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestAdmission: with every permit of both classes taken, the API's routes
// are answered 503 overloaded with Retry-After and the documented body,
// before auth (the service is not called), counted in parley_http_shed_total
// and not in the latency histogram or the access log; the operational
// routes are never shed; once a permit is free the same request is served.
func TestAdmission(t *testing.T) {
	one := admission.Config{Initial: 1, Min: 1, Max: 1, QueueWait: time.Millisecond, QueueStandingWait: time.Millisecond}
	a := newAPI(t, func(c *Config) { c.Admission = &Admission{Read: one, Write: one} })
	read, _ := a.s.limiters.read.Acquire(context.Background(), false)
	write, _ := a.s.limiters.write.Acquire(context.Background(), false)

	const history = "/v1/conversations/10/messages"
	auths := a.fake.called("Authenticate")
	for _, c := range []struct {
		method, path, route, reason string
		body                        any
	}{
		{"GET", history, "GET /v1/conversations/{id}/messages", "queue", nil},
		{"GET", "/v1/unread", "GET /v1/unread", "limit", nil}, // sheddable: never queues
		{"POST", history, "POST /v1/conversations/{id}/messages", "queue", map[string]string{"body": "hi"}},
		{"POST", "/v1/users", "POST /v1/users", "queue", map[string]string{"handle": "dave"}},
	} {
		token := "plt_alice"
		if c.path == "/v1/users" {
			token = adminToken
		}
		r := a.do(c.method, c.path, token, c.body, "X-Request-Id", "shed-1")
		stacktest.Want(t, r, 503, "overloaded")
		if string(r.Body) != string(overloadedBody) {
			t.Errorf("%s %s: body %s, want %s", c.method, c.path, r.Body, overloadedBody)
		}
		if n, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || n < 1 || n > 3 {
			t.Errorf("%s %s: Retry-After %q, want 1–3", c.method, c.path, r.Header.Get("Retry-After"))
		}
		if r.Header.Get("X-Request-Id") != "shed-1" {
			t.Errorf("%s %s: no X-Request-Id", c.method, c.path)
		}
		if got := testutil.ToFloat64(a.s.metrics.shedTotal.WithLabelValues(c.route, c.reason)); got != 1 {
			t.Errorf("parley_http_shed_total{route=%q,reason=%q} = %v, want 1", c.route, c.reason, got)
		}
		if got := testutil.ToFloat64(a.s.metrics.requests.WithLabelValues(c.route, "503", "baseline")); got != 1 {
			t.Errorf("parley_http_requests_total{route=%q,code=503} = %v, want 1", c.route, got)
		}
	}
	if n := a.fake.called("Authenticate"); n != auths {
		t.Errorf("the service was called %d times for shed requests", n-auths)
	}
	if strings.Contains(a.logs.String(), "shed-1") {
		t.Errorf("a shed request was logged:\n%s", a.logs.String())
	}
	if c := histCount(t, a, "GET /v1/conversations/{id}/messages"); c != 0 {
		t.Errorf("%d shed requests in the latency histogram", c)
	}
	for _, name := range []string{"parley_admission_limit", "parley_admission_inflight", "parley_admission_queue_wait_seconds"} {
		if n, err := testutil.GatherAndCount(a.reg, name); err != nil || n != 2 {
			t.Errorf("%s: %d series, %v; want one per class", name, n, err)
		}
	}

	// Never shed: health, readiness, metrics, admin.
	stacktest.Want(t, a.do("GET", "/healthz", "", nil), 200, "")
	stacktest.Want(t, a.do("GET", "/readyz", "", nil), 200, "")
	stacktest.Want(t, a.do("GET", "/metrics", "", nil), 200, "")
	stacktest.Want(t, a.do("GET", "/admin/status", adminToken, nil), 200, "")
	stacktest.Want(t, a.do("GET", "/admin/rollouts", adminToken, nil), 200, "")

	read.Release(admission.Ignore)
	write.Release(admission.Ignore)
	stacktest.Want(t, a.do("GET", history, "plt_alice", nil), 200, "")
	stacktest.Want(t, a.do("POST", history, "plt_alice", map[string]string{"body": "hi"}), 201, "")
	if st := a.s.limiters.read.Stats(); st.InFlight != 0 {
		t.Errorf("%d read permits still taken after the requests ended", st.InFlight)
	}
}

func histCount(t *testing.T, a *api, route string) uint64 {
	t.Helper()
	mfs, err := a.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "parley_http_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && l.GetValue() == route {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

// TestAdmissionOff: without Config.Admission nothing is ever shed and no
// admission gauge exists.
func TestAdmissionOff(t *testing.T) {
	a := newAPI(t)
	if a.s.limiters != nil {
		t.Fatal("limiters without an Admission config")
	}
	stacktest.Want(t, a.do("GET", "/v1/conversations/10/messages", "plt_alice", nil), 200, "")
	if n, _ := testutil.GatherAndCount(a.reg, "parley_admission_limit"); n != 0 {
		t.Errorf("parley_admission_limit has %d series with admission off", n)
	}
}
