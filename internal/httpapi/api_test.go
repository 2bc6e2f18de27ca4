package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/stack/stacktest"
	"github.com/parley-chat/parley/internal/wal"
)

// TestAuth: no token, an unknown one or another scheme is 401 with
// WWW-Authenticate; the admin token is not a user (403); a user token on an
// admin endpoint is 403, an unknown one 401.
func TestAuth(t *testing.T) {
	a := newAPI(t)
	r := a.do("GET", "/v1/me", "", nil)
	stacktest.Want(t, r, 401, chat.EUNAUTHENTICATED)
	if r.Header.Get("WWW-Authenticate") == "" {
		t.Error("401 without WWW-Authenticate")
	}
	stacktest.Want(t, a.do("GET", "/v1/me", "plt_unknown", nil), 401, chat.EUNAUTHENTICATED)
	stacktest.Want(t, a.do("GET", "/v1/me", "", nil, "Authorization", "Basic plt_alice"), 401, chat.EUNAUTHENTICATED)
	stacktest.Want(t, a.do("GET", "/v1/me", adminToken, nil), 403, chat.EPERMISSION)

	r = a.do("GET", "/v1/me", "plt_alice", nil)
	stacktest.Want(t, r, 200, "")
	var me stacktest.User
	r.Decode(t, &me)
	if me.ID != "1" || me.Handle != "alice" || me.DisplayName != "Alice" || me.Token != "" || r.Source() != "primary" {
		t.Fatalf("me = %+v (%s)", me, r.Header)
	}
	if !strings.Contains(string(r.Body), `"id":"1"`) {
		t.Fatalf("id is not a JSON string: %s", r.Body)
	}

	body := map[string]string{"handle": "carol"}
	stacktest.Want(t, a.do("POST", "/v1/users", "plt_alice", body), 403, chat.EPERMISSION)
	stacktest.Want(t, a.do("POST", "/v1/users", "", body), 401, chat.EUNAUTHENTICATED)
	stacktest.Want(t, a.do("POST", "/v1/users", "wrong-admin", body), 401, chat.EUNAUTHENTICATED)
	r = a.do("POST", "/v1/users", adminToken, body)
	stacktest.Want(t, r, 201, "")
	var carol stacktest.User
	r.Decode(t, &carol)
	if carol.Handle != "carol" || carol.Token != "plt_new" {
		t.Fatalf("created %+v", carol)
	}
	for _, p := range []struct {
		method, path string
		body         any
	}{{"GET", "/admin/status", nil}, {"GET", "/admin/rollouts", nil}, {"PUT", "/admin/rollouts/message_history", `{}`}} {
		stacktest.Want(t, a.do(p.method, p.path, "plt_bob", p.body), 403, chat.EPERMISSION)
		stacktest.Want(t, a.do(p.method, p.path, "", p.body), 401, chat.EUNAUTHENTICATED)
	}
}

// TestErrorMapping: each domain error code has its status; a 503 carries
// Retry-After; an internal error is 500 with the request id and nothing
// else, its cause in the log; the request's own deadline is 503.
func TestErrorMapping(t *testing.T) {
	secret := errors.New("pq: connection to 10.0.0.7:5432 user=parley password=hunter2 failed")
	// A read (GET /v1/conversations/10) or a send answers each error, where
	// the contract documents its status.
	tests := []struct {
		name   string
		send   bool
		err    error
		status int
		code   string
	}{
		{"invalid", false, chat.Errorf(chat.EINVALID, "bad"), 400, chat.EINVALID},
		{"not found", false, chat.Errorf(chat.ENOTFOUND, "nope"), 404, chat.ENOTFOUND},
		{"conflict", true, chat.Errorf(chat.ECONFLICT, "taken"), 409, chat.ECONFLICT},
		{"too large", true, chat.Errorf(chat.ETOOLARGE, "big"), 413, chat.ETOOLARGE},
		{"permission", false, chat.Errorf(chat.EPERMISSION, "no"), 403, chat.EPERMISSION},
		{"unavailable", false, &chat.Error{Code: chat.EUNAVAILABLE, Message: "the database is unavailable; retry shortly", Err: secret}, 503, chat.EUNAVAILABLE},
		{"unavailable send", true, &chat.Error{Code: chat.EUNAVAILABLE, Message: "the database is unavailable; retry shortly", Err: secret}, 503, chat.EUNAVAILABLE},
		{"deadline", false, fmt.Errorf("query: %w", context.DeadlineExceeded), 503, chat.EUNAVAILABLE},
		{"internal", false, fmt.Errorf("scan: %w", secret), 500, chat.EINTERNAL},
		{"internal send", true, fmt.Errorf("scan: %w", secret), 500, chat.EINTERNAL},
		{"unknown code", false, chat.Errorf("teapot", "short and stout"), 500, "teapot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAPI(t)
			a.fake.read = func(string) (chat.Read, error) { return chat.Read{}, tt.err }
			a.fake.writeErr = tt.err
			id := "req-" + strings.ReplaceAll(tt.name, " ", "-")
			var r stacktest.Reply
			if tt.send {
				r = a.do("POST", "/v1/conversations/10/messages", "plt_alice", map[string]string{"body": "hi"}, "X-Request-Id", id)
			} else {
				r = a.do("GET", "/v1/conversations/10", "plt_alice", nil, "X-Request-Id", id)
			}
			stacktest.Want(t, r, tt.status, tt.code)
			if tt.status == 503 && r.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if strings.Contains(string(r.Body), "hunter2") || strings.Contains(string(r.Body), "10.0.0.7") {
				t.Fatalf("the answer leaks internals: %s", r.Body)
			}
			if tt.status == 500 && tt.code == chat.EINTERNAL {
				if !strings.Contains(string(r.Body), id) {
					t.Errorf("500 without its request id: %s", r.Body)
				}
				if !strings.Contains(a.logs.String(), "hunter2") {
					t.Error("the cause of a 500 is not in the log")
				}
			}
		})
	}
}

// TestClientGone: a request whose client left is logged as 499, not as an
// error of the server.
func TestClientGone(t *testing.T) {
	a := newAPI(t)
	inside := make(chan struct{})
	a.fake.read = func(string) (chat.Read, error) {
		close(inside)
		time.Sleep(200 * time.Millisecond)
		return chat.Read{}, context.Canceled
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", a.srv.URL+"/v1/unread", nil)
	req.Header.Set("Authorization", "Bearer plt_alice")
	go func() { <-inside; cancel() }()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("the request was not cancelled")
	}
	stacktest.WaitFor(t, 5*time.Second, "the access log line", func() bool { return strings.Contains(a.logs.String(), `"status":499`) })
}

// TestReadAnswers: a read's body is written as the service made it, with
// X-Read-Source from its source and the cohort label from its cohort —
// also when the read fails; before any read, the source is the
// authentication's (the primary for a refused request).
func TestReadAnswers(t *testing.T) {
	a := newAPI(t)
	const fromCache = `{"messages":[],"has_more":false,"next_cursor":"from-cache"}` + "\n"
	a.fake.read = func(m string) (chat.Read, error) {
		if m == "Conversation" {
			return chat.Read{Source: chat.SourceReplica, Cohort: chat.CohortOptimized}, chat.Errorf(chat.ENOTFOUND, "conversation not found")
		}
		return chat.Read{Body: []byte(fromCache), Source: chat.SourceCache, Cohort: chat.CohortOptimized}, nil
	}
	r := a.do("GET", "/v1/conversations/10/messages", "plt_alice", nil)
	stacktest.Want(t, r, 200, "")
	if string(r.Body) != fromCache || r.Source() != "cache" || r.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("answer %q, source %q, type %q", r.Body, r.Source(), r.Header.Get("Content-Type"))
	}
	if n := testutil.ToFloat64(a.s.metrics.requests.WithLabelValues("GET /v1/conversations/{id}/messages", "200", "optimized")); n != 1 {
		t.Errorf("optimized cohort count = %v, want 1", n)
	}
	r = a.do("GET", "/v1/conversations/10", "plt_alice", nil)
	stacktest.Want(t, r, 404, chat.ENOTFOUND)
	if r.Source() != "replica" {
		t.Errorf("a failed read from the replica: X-Read-Source %q", r.Source())
	}
	if n := testutil.ToFloat64(a.s.metrics.requests.WithLabelValues("GET /v1/conversations/{id}", "404", "optimized")); n != 1 {
		t.Errorf("404 in the optimized cohort = %v, want 1", n)
	}
	a.fake.authSource = chat.SourceCache
	if r := a.do("GET", "/v1/me", "plt_alice", nil); r.Source() != "cache" {
		t.Errorf("/v1/me after a remembered token: X-Read-Source %q", r.Source())
	}
	for _, path := range []string{"/v1/me", "/v1/unread", "/v1/conversations/10/messages"} {
		if r := a.do("GET", path, "", nil); r.Status != 401 || r.Source() != "primary" {
			t.Errorf("%s without a token: %d, X-Read-Source %q", path, r.Status, r.Source())
		}
	}
	if r := a.do("POST", "/v1/conversations/10/read", "plt_alice", map[string]string{"message_id": "5"}); r.Source() != "" {
		t.Errorf("a write with X-Read-Source %q", r.Source())
	}
}

// TestReadRequests: query parameters and consistency headers become the
// service's requests; the defaults are the contract's (50 and 30); bad ones
// are 400 before the service reads anything.
func TestReadRequests(t *testing.T) {
	a := newAPI(t)
	stacktest.Want(t, a.do("GET", "/v1/conversations/10/messages", "plt_alice", nil), 200, "")
	if h := a.fake.lastHistory; h != (chat.HistoryRequest{ConversationID: 10, Direction: chat.Newest, Limit: 50}) {
		t.Errorf("newest page request %+v", h)
	}
	stacktest.Want(t, a.do("GET", "/v1/conversations/10/messages?limit=7&before=CUR", "plt_alice", nil, "X-Consistency", "strong"), 200, "")
	if h, o := a.fake.lastHistory, a.fake.lastOpts; h != (chat.HistoryRequest{ConversationID: 10, Direction: chat.Before, Cursor: "CUR", Limit: 7}) || !o.Strong {
		t.Errorf("before request %+v, options %+v", h, o)
	}
	stacktest.Want(t, a.do("GET", "/v1/conversations/10/messages?after=", "plt_alice", nil, "X-Consistency-Token", "16/B374D848"), 200, "")
	if h, o := a.fake.lastHistory, a.fake.lastOpts; h.Direction != chat.After || h.Cursor != "" || o.Token != wal.LSN(0x16_B374D848) || o.Strong {
		t.Errorf("after request %+v, options %+v", h, o)
	}
	stacktest.Want(t, a.do("GET", "/v1/conversations", "plt_alice", nil), 200, "")
	if l := a.fake.lastList; l != (chat.ListRequest{Direction: chat.Newest, Limit: 30}) {
		t.Errorf("list request %+v", l)
	}
	stacktest.Want(t, a.do("GET", "/v1/conversations?cursor=C2&limit=100", "plt_alice", nil), 200, "")
	if l := a.fake.lastList; l != (chat.ListRequest{Direction: chat.Before, Cursor: "C2", Limit: 100}) {
		t.Errorf("list request %+v", l)
	}
	reads := a.fake.called("History") + a.fake.called("Conversations")
	for _, path := range []string{
		"/v1/conversations/10/messages?limit=0", "/v1/conversations/10/messages?limit=101", "/v1/conversations/10/messages?limit=x",
		"/v1/conversations/10/messages?limit=", "/v1/conversations?limit=0",
	} {
		stacktest.Want(t, a.bad("GET", path, "plt_alice", nil), 400, chat.EINVALID)
	}
	// Both before and after: the description cannot say "not both".
	stacktest.Want(t, a.do("GET", "/v1/conversations/10/messages?before=a&after=b", "plt_alice", nil), 400, chat.EINVALID)
	for _, h := range [][]string{{"X-Consistency", "eventual"}, {"X-Consistency-Token", "nope"}} {
		stacktest.Want(t, a.bad("GET", "/v1/unread", "plt_alice", nil, h...), 400, chat.EINVALID)
	}
	if got := a.fake.called("History") + a.fake.called("Conversations") + a.fake.called("Unread"); got != reads {
		t.Errorf("bad requests reached the service: %d reads, want %d", got, reads)
	}
	for _, id := range []string{"abc", "0", "-1", "01", "99999999999999999999"} {
		stacktest.Want(t, a.bad("GET", "/v1/conversations/"+id+"/messages", "plt_alice", nil), 404, chat.ENOTFOUND)
	}
}

// TestWrites: the answers of writes carry the write's token (none when it
// is unknown); a replayed send is 200 with Idempotent-Replayed; malformed
// bodies are refused before the service is called, and on a conversation
// the caller is not a member of they are 404, not 400.
func TestWrites(t *testing.T) {
	a := newAPI(t)
	a.fake.writeToken = wal.LSN(0x16_B374D848)
	r := a.do("POST", "/v1/conversations/10/messages", "plt_alice", map[string]string{"body": "hi"}, "Idempotency-Key", "k1")
	stacktest.Want(t, r, 201, "")
	var m stacktest.Message
	r.Decode(t, &m)
	if r.Header.Get("X-Consistency-Token") != "16/B374D848" || m.ID != "100" || m.ConversationID != "10" || m.SenderID != "1" || m.Cursor == "" {
		t.Fatalf("send: %s %+v", r.Header, m)
	}
	a.fake.replayed = true
	r = a.do("POST", "/v1/conversations/10/messages", "plt_alice", map[string]string{"body": "hi"}, "Idempotency-Key", "k1")
	stacktest.Want(t, r, 200, "")
	if r.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replayed send without Idempotent-Replayed: %s", r.Header)
	}
	a.fake.writeToken = 0
	for _, w := range []struct{ path, token, body string }{
		{"/v1/users", adminToken, `{"handle":"x"}`},
		{"/v1/conversations", "plt_alice", `{"member_ids":["2"]}`},
		{"/v1/conversations/10/read", "plt_alice", `{"message_id":"5"}`},
	} {
		r := a.do("POST", w.path, w.token, w.body)
		if r.Status/100 != 2 || r.Header.Get("X-Consistency-Token") != "" {
			t.Errorf("%s with an unknown position: %d, token %q", w.path, r.Status, r.Header.Get("X-Consistency-Token"))
		}
	}

	sends := a.fake.called("Send")
	// spec: whether api/openapi.yaml can refuse the request too (it cannot
	// see invalid UTF-8 — JSON decoders replace it — or a repeated header).
	for _, tc := range []struct {
		name   string
		token  string
		body   string
		header []string
		spec   bool
		status int
		code   string
	}{
		{"malformed JSON", "plt_alice", `{"body":`, nil, true, 400, chat.EINVALID},
		{"unknown field", "plt_alice", `{"body":"x","extra":1}`, nil, true, 400, chat.EINVALID},
		{"wrong type", "plt_alice", `{"body":5}`, nil, true, 400, chat.EINVALID},
		{"empty text", "plt_alice", `{"body":""}`, nil, true, 400, chat.EINVALID},
		{"blank text", "plt_alice", `{"body":" \t\n"}`, nil, true, 400, chat.EINVALID},
		{"invalid UTF-8", "plt_alice", "{\"body\":\"ab\xff\"}", nil, false, 400, chat.EINVALID},
		{"over 64 KiB", "plt_alice", `{"body":"` + strings.Repeat("x", 70000) + `"}`, nil, true, 413, chat.ETOOLARGE},
		{"two keys", "plt_alice", `{"body":"x"}`, []string{"Idempotency-Key", "a", "Idempotency-Key", "b"}, false, 400, chat.EINVALID},
		{"long key", "plt_alice", `{"body":"x"}`, []string{"Idempotency-Key", strings.Repeat("k", 129)}, true, 400, chat.EINVALID},
		{"non-member, malformed", "plt_carol", `{"body":`, nil, true, 404, chat.ENOTFOUND},
		{"non-member, too large", "plt_carol", `{"body":"` + strings.Repeat("x", 70000) + `"}`, nil, true, 404, chat.ENOTFOUND},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := a.c
			if tc.spec {
				c = c.Invalid()
			}
			r := c.Do("POST", "/v1/conversations/10/messages", tc.token, tc.body, tc.header...)
			stacktest.Want(t, r, tc.status, tc.code)
		})
	}
	if got := a.fake.called("Send"); got != sends {
		t.Errorf("malformed sends reached the service: %d, want %d", got, sends)
	}
	// A chunked body over the limit (an io.Reader: no Content-Length) is 413 too.
	body := io.MultiReader(strings.NewReader(`{"body":"`), strings.NewReader(strings.Repeat("x", 70000)), strings.NewReader(`"}`))
	stacktest.Want(t, a.bad("POST", "/v1/conversations/10/messages", "plt_alice", body), 413, chat.ETOOLARGE)
}

// TestAdmin: the admin endpoints answer with the service's values; an
// unknown rollout endpoint is 404 and an out-of-range value 400.
func TestAdmin(t *testing.T) {
	a := newAPI(t)
	r := a.do("GET", "/admin/status", adminToken, nil)
	stacktest.Want(t, r, 200, "")
	if !strings.Contains(string(r.Body), `"cache":{"state":"up"}`) {
		t.Errorf("status %s", r.Body)
	}
	stacktest.Want(t, a.do("GET", "/admin/rollouts", adminToken, nil), 200, "")
	r = a.do("PUT", "/admin/rollouts/message_history", adminToken, `{"percent":25}`)
	stacktest.Want(t, r, 200, "")
	if !strings.Contains(string(r.Body), `"percent":25`) {
		t.Errorf("set rollout %s", r.Body)
	}
	stacktest.Want(t, a.bad("PUT", "/admin/rollouts/search", adminToken, `{"percent":25}`), 404, chat.ENOTFOUND)
	stacktest.Want(t, a.bad("PUT", "/admin/rollouts/message_history", adminToken, `{"percent":101}`), 400, chat.EINVALID)
	stacktest.Want(t, a.bad("PUT", "/admin/rollouts/message_history", adminToken, `{"percent":"x"}`), 400, chat.EINVALID)
}

func TestOperationalBehaviour(t *testing.T) {
	a := newAPI(t)

	t.Run("request ids", func(t *testing.T) {
		r := a.do("GET", "/v1/me", "plt_alice", nil, "X-Request-Id", "client-req-42")
		if r.Header.Get("X-Request-Id") != "client-req-42" {
			t.Fatalf("sane incoming id not kept: %q", r.Header.Get("X-Request-Id"))
		}
		r = a.do("GET", "/v1/me", "plt_alice", nil, "X-Request-Id", "bad id\twith spaces")
		if id := r.Header.Get("X-Request-Id"); id == "" || strings.Contains(id, " ") {
			t.Fatalf("insane incoming id kept: %q", id)
		}
		if a.do("GET", "/healthz", "", nil).Header.Get("X-Request-Id") == "" {
			t.Fatal("no X-Request-Id")
		}
	})

	t.Run("unknown route and method", func(t *testing.T) {
		stacktest.Want(t, a.bad("GET", "/v1/nothing", "plt_alice", nil), 404, chat.ENOTFOUND)
		r := a.bad("DELETE", "/v1/me", "plt_alice", nil)
		stacktest.Want(t, r, 405, "method_not_allowed")
		if !strings.Contains(r.Header.Get("Allow"), "GET") {
			t.Fatalf("Allow %q", r.Header.Get("Allow"))
		}
	})

	t.Run("panic", func(t *testing.T) {
		a.s.mux.HandleFunc("GET /test/panic", func(http.ResponseWriter, *http.Request) {
			panic("boom: postgres://secret@db/parley")
		})
		r := a.bad("GET", "/test/panic", "", nil, "X-Request-Id", "panic-1")
		stacktest.Want(t, r, 500, chat.EINTERNAL)
		if strings.Contains(string(r.Body), "secret") || strings.Contains(string(r.Body), "boom") || !strings.Contains(string(r.Body), "panic-1") {
			t.Fatalf("500 body %s", r.Body)
		}
		if !strings.Contains(a.logs.String(), "boom") || !strings.Contains(a.logs.String(), `"request_id":"panic-1"`) {
			t.Fatal("the panic is not in the log with its request id")
		}
	})

	t.Run("metrics and access log", func(t *testing.T) {
		a.do("GET", "/v1/me", "plt_alice", nil)
		a.do("GET", "/v1/me", "plt_nobody", nil)
		n := testutil.ToFloat64(a.s.metrics.requests.WithLabelValues("GET /v1/me", "200", "baseline"))
		if n < 1 {
			t.Fatalf("parley_http_requests_total{route=\"GET /v1/me\",code=\"200\"} = %v", n)
		}
		if testutil.ToFloat64(a.s.metrics.requests.WithLabelValues("GET /v1/me", "401", "baseline")) < 1 {
			t.Fatal("401 not counted")
		}
		if c, err := testutil.GatherAndCount(a.reg, "parley_http_request_duration_seconds"); err != nil || c == 0 {
			t.Fatalf("duration histogram: %d series, %v", c, err)
		}
		logs := a.logs.String()
		if strings.Contains(logs, "plt_alice") || strings.Contains(logs, adminToken) {
			t.Fatal("a token is in the access log")
		}
		for _, field := range []string{`"route":"GET /v1/me"`, `"status":401`, `"duration_ms":`, `"bytes":`, `"request_id":`, `"method":"GET"`, `"user_id":1`} {
			if !strings.Contains(logs, field) {
				t.Fatalf("access log lacks %s:\n%s", field, logs)
			}
		}
	})
}

// TestAccessLogSample: with sampling off, ordinary answers are not logged
// and server errors still are.
func TestAccessLogSample(t *testing.T) {
	a := newAPI(t, func(c *Config) { c.AccessLogSample = -1 })
	for range 20 {
		stacktest.Want(t, a.do("GET", "/v1/me", "plt_alice", nil), 200, "")
	}
	if strings.Contains(a.logs.String(), `"route":"GET /v1/me"`) {
		t.Fatalf("sampled-out requests logged:\n%s", a.logs.String())
	}
	a.fake.read = func(string) (chat.Read, error) { return chat.Read{}, errors.New("boom") }
	stacktest.Want(t, a.do("GET", "/v1/unread", "plt_alice", nil), 500, chat.EINTERNAL)
	if !strings.Contains(a.logs.String(), `"route":"GET /v1/unread"`) {
		t.Fatal("a 500 was not logged with sampling off")
	}
}
