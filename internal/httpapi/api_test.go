package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/postgres"
)

func TestAuth(t *testing.T) {
	a := newAPI(t)
	alice := a.createUser()

	r := a.do("GET", "/v1/me", "", nil)
	want(t, r, 401, chat.EUNAUTHENTICATED)
	if r.header.Get("WWW-Authenticate") == "" {
		t.Error("401 without WWW-Authenticate")
	}
	want(t, a.do("GET", "/v1/me", "plt_unknown", nil), 401, chat.EUNAUTHENTICATED)
	want(t, a.do("GET", "/v1/me", "", nil, "Authorization", "Basic "+alice.Token), 401, chat.EUNAUTHENTICATED)
	want(t, a.do("GET", "/v1/me", adminToken, nil), 403, chat.EPERMISSION)

	r = a.do("GET", "/v1/me", alice.Token, nil)
	want(t, r, 200, "")
	var me userJSON
	r.json(t, &me)
	if me.ID != alice.ID || me.Handle != alice.Handle || me.Token != "" || r.header.Get("X-Read-Source") != "primary" {
		t.Fatalf("me = %+v (%s)", me, r.header)
	}
	if !regexp.MustCompile(`^[1-9][0-9]*$`).MatchString(me.ID) || !strings.Contains(string(r.body), `"id":"`) {
		t.Fatalf("id is not a JSON string of digits: %s", r.body)
	}

	// Admin endpoint: user token 403, none or unknown 401.
	body := map[string]string{"handle": "bob"}
	want(t, a.do("POST", "/v1/users", alice.Token, body), 403, chat.EPERMISSION)
	want(t, a.do("POST", "/v1/users", "", body), 401, chat.EUNAUTHENTICATED)
	want(t, a.do("POST", "/v1/users", "wrong-admin", body), 401, chat.EUNAUTHENTICATED)
	r = a.do("POST", "/v1/users", adminToken, body)
	want(t, r, 201, "")
	var bob userJSON
	r.json(t, &bob)
	if bob.DisplayName != "bob" || !strings.HasPrefix(bob.Token, "plt_") {
		t.Fatalf("created %+v", bob)
	}
	want(t, a.do("POST", "/v1/users", adminToken, body), 409, chat.ECONFLICT)
	want(t, a.do("POST", "/v1/users", adminToken, map[string]string{"handle": "Bad Handle"}), 400, chat.EINVALID)
}

func TestNonMembersGetNotFound(t *testing.T) {
	a := newAPI(t)
	alice, bob, eve := a.createUser(), a.createUser(), a.createUser()
	c := a.createConversation(alice, bob)
	m := a.send(c.ID, alice, "private")
	before := a.counts()
	for _, id := range []string{c.ID, "999999999", "abc", "0", "-1", "01"} {
		for _, tc := range []struct {
			method, path string
			body         any
		}{
			{"GET", "/v1/conversations/" + id, nil},
			{"GET", "/v1/conversations/" + id + "/messages", nil},
			{"GET", "/v1/conversations/" + id + "/messages?before=" + m.Cursor, nil},
			{"POST", "/v1/conversations/" + id + "/messages", map[string]string{"body": "hi"}},
			{"POST", "/v1/conversations/" + id + "/read", map[string]string{"message_id": m.ID}},
			// Malformed requests too: a non-member learns nothing.
			{"GET", "/v1/conversations/" + id + "/messages?limit=0", nil},
			{"GET", "/v1/conversations/" + id + "/messages?after=garbage", nil},
			{"POST", "/v1/conversations/" + id + "/messages", `{"body":"  "}`},
			{"POST", "/v1/conversations/" + id + "/messages", `{"body":"` + strings.Repeat("x", 70000) + `"}`},
			{"POST", "/v1/conversations/" + id + "/read", `{"message_id":"x"}`},
		} {
			t.Run(tc.method+" "+tc.path[:min(len(tc.path), 60)], func(t *testing.T) {
				r := a.do(tc.method, tc.path, eve.Token, tc.body)
				want(t, r, 404, chat.ENOTFOUND)
				if strings.Contains(string(r.body), "private") {
					t.Fatalf("a 404 leaks content: %s", r.body)
				}
			})
		}
	}
	if after := a.counts(); after != before {
		t.Fatalf("non-member requests wrote: %s → %s", before, after)
	}
	// Members do see it.
	want(t, a.do("GET", "/v1/conversations/"+c.ID, bob.Token, nil), 200, "")
}

// TestBadInput: each malformed request gets its documented status and code,
// and nothing is written.
func TestBadInput(t *testing.T) {
	a := newAPI(t)
	alice, bob, carol := a.createUser(), a.createUser(), a.createUser()
	c := a.createConversation(alice, bob)
	other := a.createConversation(carol, alice)
	m := a.send(c.ID, bob, "hello")
	foreign := a.send(other.ID, carol, "elsewhere")
	// A list cursor of alice's (needs more than one page).
	for range 3 {
		a.createConversation(alice)
	}
	var list conversationListJSON
	r := a.do("GET", "/v1/conversations?limit=1", alice.Token, nil)
	r.json(t, &list)
	if list.NextCursor == nil {
		t.Fatal("no list cursor")
	}
	aliceListCursor := *list.NextCursor

	msgs := "/v1/conversations/" + c.ID + "/messages"
	read := "/v1/conversations/" + c.ID + "/read"
	tests := []struct {
		name         string
		method, path string
		token        string
		body         any
		header       []string
		status       int
		code         string
	}{
		{"malformed JSON", "POST", msgs, alice.Token, `{"body":`, nil, 400, chat.EINVALID},
		{"not JSON", "POST", msgs, alice.Token, `body=hi`, nil, 400, chat.EINVALID},
		{"unknown field", "POST", msgs, alice.Token, `{"body":"x","extra":1}`, nil, 400, chat.EINVALID},
		{"wrong type", "POST", msgs, alice.Token, `{"body":5}`, nil, 400, chat.EINVALID},
		{"array", "POST", msgs, alice.Token, `["x"]`, nil, 400, chat.EINVALID},
		{"trailing data", "POST", msgs, alice.Token, `{"body":"x"} {"body":"y"}`, nil, 400, chat.EINVALID},
		{"null", "POST", msgs, alice.Token, `null`, nil, 400, chat.EINVALID},
		{"no body", "POST", msgs, alice.Token, nil, nil, 400, chat.EINVALID},
		{"empty text", "POST", msgs, alice.Token, `{"body":""}`, nil, 400, chat.EINVALID},
		{"missing text", "POST", msgs, alice.Token, `{}`, nil, 400, chat.EINVALID},
		{"whitespace text", "POST", msgs, alice.Token, `{"body":" \t\n\u00a0"}`, nil, 400, chat.EINVALID},
		{"4001 code points", "POST", msgs, alice.Token, map[string]string{"body": strings.Repeat("ü", 4001)}, nil, 400, chat.EINVALID},
		{"invalid UTF-8", "POST", msgs, alice.Token, []byte("{\"body\":\"ab\xff\xfecd\"}"), nil, 400, chat.EINVALID},
		{"NUL", "POST", msgs, alice.Token, `{"body":"a\u0000b"}`, nil, 400, chat.EINVALID},
		{"body over 64 KiB", "POST", msgs, alice.Token, `{"body":"` + strings.Repeat("x", 70000) + `"}`, nil, 413, chat.ETOOLARGE},
		{"long idempotency key", "POST", msgs, alice.Token, `{"body":"x"}`, []string{"Idempotency-Key", strings.Repeat("k", 129)}, 400, chat.EINVALID},
		{"non-ASCII idempotency key", "POST", msgs, alice.Token, `{"body":"x"}`, []string{"Idempotency-Key", "clé"}, 400, chat.EINVALID},
		{"two idempotency keys", "POST", msgs, alice.Token, `{"body":"x"}`, []string{"Idempotency-Key", "a", "Idempotency-Key", "b"}, 400, chat.EINVALID},

		{"limit 0", "GET", msgs + "?limit=0", alice.Token, nil, nil, 400, chat.EINVALID},
		{"limit 101", "GET", msgs + "?limit=101", alice.Token, nil, nil, 400, chat.EINVALID},
		{"limit -1", "GET", msgs + "?limit=-1", alice.Token, nil, nil, 400, chat.EINVALID},
		{"limit abc", "GET", msgs + "?limit=abc", alice.Token, nil, nil, 400, chat.EINVALID},
		{"limit empty", "GET", msgs + "?limit=", alice.Token, nil, nil, 400, chat.EINVALID},
		{"garbage cursor", "GET", msgs + "?before=garbage", alice.Token, nil, nil, 400, chat.EINVALID},
		{"empty cursor", "GET", msgs + "?after=", alice.Token, nil, nil, 400, chat.EINVALID},
		{"foreign conversation's cursor", "GET", msgs + "?before=" + foreign.Cursor, alice.Token, nil, nil, 400, chat.EINVALID},
		{"list cursor as message cursor", "GET", msgs + "?after=" + aliceListCursor, alice.Token, nil, nil, 400, chat.EINVALID},
		{"tampered cursor", "GET", msgs + "?before=" + tamper(m.Cursor), alice.Token, nil, nil, 400, chat.EINVALID},
		{"before and after", "GET", msgs + "?before=" + m.Cursor + "&after=" + m.Cursor, alice.Token, nil, nil, 400, chat.EINVALID},

		{"list limit 0", "GET", "/v1/conversations?limit=0", alice.Token, nil, nil, 400, chat.EINVALID},
		{"list garbage cursor", "GET", "/v1/conversations?cursor=zzz", alice.Token, nil, nil, 400, chat.EINVALID},
		{"message cursor as list cursor", "GET", "/v1/conversations?cursor=" + m.Cursor, alice.Token, nil, nil, 400, chat.EINVALID},
		{"another user's list cursor", "GET", "/v1/conversations?cursor=" + aliceListCursor, bob.Token, nil, nil, 400, chat.EINVALID},

		{"member ids as numbers", "POST", "/v1/conversations", alice.Token, `{"member_ids":[1]}`, nil, 400, chat.EINVALID},
		{"unknown member", "POST", "/v1/conversations", alice.Token, `{"member_ids":["99999999"]}`, nil, 400, chat.EINVALID},
		{"malformed member id", "POST", "/v1/conversations", alice.Token, `{"member_ids":["x1"]}`, nil, 400, chat.EINVALID},
		{"title too long", "POST", "/v1/conversations", alice.Token, map[string]any{"title": strings.Repeat("t", 201)}, nil, 400, chat.EINVALID},
		{"conversation unknown field", "POST", "/v1/conversations", alice.Token, `{"members":[]}`, nil, 400, chat.EINVALID},

		{"read: message of another conversation", "POST", read, alice.Token, map[string]string{"message_id": foreign.ID}, nil, 400, chat.EINVALID},
		{"read: unknown message", "POST", read, alice.Token, map[string]string{"message_id": "99999999"}, nil, 400, chat.EINVALID},
		{"read: no message id", "POST", read, alice.Token, `{}`, nil, 400, chat.EINVALID},
		{"read: numeric message id", "POST", read, alice.Token, `{"message_id":5}`, nil, 400, chat.EINVALID},

		{"user: unknown field", "POST", "/v1/users", adminToken, `{"handle":"zed","admin":true}`, nil, 400, chat.EINVALID},
		{"user: wrong type", "POST", "/v1/users", adminToken, `{"handle":7}`, nil, 400, chat.EINVALID},
		{"user: over 64 KiB", "POST", "/v1/users", adminToken, `{"handle":"` + strings.Repeat("z", 66000) + `"}`, nil, 413, chat.ETOOLARGE},
	}
	before := a.counts()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := a.do(tt.method, tt.path, tt.token, tt.body, tt.header...)
			want(t, r, tt.status, tt.code)
			var e errorBody
			r.json(t, &e)
			if e.Error.Message == "" {
				t.Fatalf("no error message: %s", r.body)
			}
		})
	}
	if after := a.counts(); after != before {
		t.Fatalf("bad requests wrote: %s → %s", before, after)
	}
}

func tamper(s string) string {
	b := []byte(s)
	if b[10] == 'A' {
		b[10] = 'B'
	} else {
		b[10] = 'A'
	}
	return string(b)
}

func TestMessagesOverHTTP(t *testing.T) {
	a := newAPI(t)
	alice, bob := a.createUser(), a.createUser()
	c := a.createConversation(alice, bob)
	if c.LastMessage != nil || c.LastMessageAt != nil || c.UnreadCount != 0 || len(c.MemberIDs) != 2 {
		t.Fatalf("new conversation %+v", c)
	}
	if !strings.Contains(string(a.do("GET", "/v1/conversations/"+c.ID, alice.Token, nil).body), `"last_message":null`) {
		t.Fatal("last_message is not null")
	}
	var sent []messageJSON
	for i := range 5 {
		sent = append(sent, a.send(c.ID, alice, fmt.Sprintf("m%d", i)))
	}
	timeRE := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)
	for _, m := range sent {
		if !timeRE.MatchString(m.CreatedAt) || m.ConversationID != c.ID || m.SenderID != alice.ID || len(m.Cursor) != chat.CursorLen {
			t.Fatalf("message %+v", m)
		}
	}

	r := a.do("GET", "/v1/conversations/"+c.ID+"/messages?limit=2", bob.Token, nil)
	want(t, r, 200, "")
	if r.header.Get("X-Read-Source") != "primary" {
		t.Fatalf("X-Read-Source %q", r.header.Get("X-Read-Source"))
	}
	var p messagePageJSON
	r.json(t, &p)
	if len(p.Messages) != 2 || p.Messages[0].ID != sent[4].ID || !p.HasMore || p.NextCursor == nil {
		t.Fatalf("newest page %+v", p)
	}
	r = a.do("GET", "/v1/conversations/"+c.ID+"/messages?limit=10&before="+*p.NextCursor, bob.Token, nil)
	p = messagePageJSON{}
	r.json(t, &p)
	if len(p.Messages) != 3 || p.Messages[0].ID != sent[2].ID || p.HasMore || p.NextCursor != nil {
		t.Fatalf("older page %s", r.body)
	}
	r = a.do("GET", "/v1/conversations/"+c.ID+"/messages?limit=2&after="+sent[1].Cursor, bob.Token, nil)
	p = messagePageJSON{}
	r.json(t, &p)
	if len(p.Messages) != 2 || p.Messages[0].ID != sent[2].ID || !p.HasMore || p.NextCursor == nil || *p.NextCursor != sent[3].Cursor {
		t.Fatalf("after page %s", r.body)
	}
	// Caught up: empty, has_more false, next_cursor is the cursor to poll with.
	r = a.do("GET", "/v1/conversations/"+c.ID+"/messages?after="+sent[4].Cursor, bob.Token, nil)
	p = messagePageJSON{}
	r.json(t, &p)
	if len(p.Messages) != 0 || p.HasMore || p.NextCursor == nil || *p.NextCursor != sent[4].Cursor || !strings.Contains(string(r.body), `"messages":[]`) {
		t.Fatalf("caught-up page %s", r.body)
	}

	// Unread and read markers.
	var un unreadJSON
	a.do("GET", "/v1/unread", bob.Token, nil).json(t, &un)
	if un.Total != 5 || len(un.Conversations) != 1 || un.Conversations[0].ID != c.ID {
		t.Fatalf("bob's unread %+v", un)
	}
	r = a.do("POST", "/v1/conversations/"+c.ID+"/read", bob.Token, map[string]string{"message_id": sent[2].ID})
	want(t, r, 200, "")
	if !strings.Contains(string(r.body), `"unread_count":2`) {
		t.Fatalf("read → %s", r.body)
	}
	r = a.do("POST", "/v1/conversations/"+c.ID+"/read", bob.Token, map[string]string{"message_id": sent[0].ID})
	if !strings.Contains(string(r.body), `"unread_count":2`) {
		t.Fatalf("read backwards → %s (the marker must stay)", r.body)
	}
	un = unreadJSON{}
	a.do("GET", "/v1/unread", alice.Token, nil).json(t, &un)
	if un.Total != 0 || un.Conversations == nil {
		t.Fatalf("alice's unread %+v (own messages are never unread)", un)
	}

	// Idempotency over HTTP: 201 then 200 with the same message, 409 on another body.
	path := "/v1/conversations/" + c.ID + "/messages"
	r1 := a.do("POST", path, bob.Token, map[string]string{"body": "once"}, "Idempotency-Key", "abc 123")
	r2 := a.do("POST", path, bob.Token, map[string]string{"body": "once"}, "Idempotency-Key", "abc 123")
	want(t, r1, 201, "")
	want(t, r2, 200, "")
	var m1, m2 messageJSON
	r1.json(t, &m1)
	r2.json(t, &m2)
	if m1 != m2 {
		t.Fatalf("replay %+v != %+v", m2, m1)
	}
	want(t, a.do("POST", path, bob.Token, map[string]string{"body": "twice"}, "Idempotency-Key", "abc 123"), 409, chat.ECONFLICT)
}

func TestOperationalBehaviour(t *testing.T) {
	a := newAPI(t)
	alice := a.createUser()

	t.Run("request ids", func(t *testing.T) {
		r := a.do("GET", "/v1/me", alice.Token, nil, "X-Request-Id", "client-req-42")
		if r.header.Get("X-Request-Id") != "client-req-42" {
			t.Fatalf("sane incoming id not kept: %q", r.header.Get("X-Request-Id"))
		}
		r = a.do("GET", "/v1/me", alice.Token, nil, "X-Request-Id", "bad id\twith spaces")
		if id := r.header.Get("X-Request-Id"); id == "" || strings.Contains(id, " ") {
			t.Fatalf("insane incoming id kept: %q", id)
		}
		if a.do("GET", "/healthz", "", nil).header.Get("X-Request-Id") == "" {
			t.Fatal("no X-Request-Id")
		}
	})

	t.Run("unknown route and method", func(t *testing.T) {
		want(t, a.do("GET", "/v1/nothing", alice.Token, nil), 404, chat.ENOTFOUND)
		r := a.do("DELETE", "/v1/me", alice.Token, nil)
		want(t, r, 405, "method_not_allowed")
		if !strings.Contains(r.header.Get("Allow"), "GET") {
			t.Fatalf("Allow %q", r.header.Get("Allow"))
		}
	})

	t.Run("panic", func(t *testing.T) {
		a.s.mux.HandleFunc("GET /test/panic", func(http.ResponseWriter, *http.Request) {
			panic("boom: postgres://secret@db/parley")
		})
		r := a.do("GET", "/test/panic", "", nil, "X-Request-Id", "panic-1")
		want(t, r, 500, chat.EINTERNAL)
		if strings.Contains(string(r.body), "secret") || strings.Contains(string(r.body), "boom") || !strings.Contains(string(r.body), "panic-1") {
			t.Fatalf("500 body %s", r.body)
		}
		if !strings.Contains(a.logs.String(), "boom") || !strings.Contains(a.logs.String(), `"request_id":"panic-1"`) {
			t.Fatal("the panic is not in the log with its request id")
		}
	})

	t.Run("metrics and access log", func(t *testing.T) {
		a.do("GET", "/v1/me", alice.Token, nil)
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
		if strings.Contains(logs, alice.Token) || strings.Contains(logs, adminToken) {
			t.Fatal("a token is in the access log")
		}
		for _, field := range []string{`"route":"GET /v1/me"`, `"status":401`, `"duration_ms":`, `"bytes":`, `"request_id":`, `"method":"GET"`} {
			if !strings.Contains(logs, field) {
				t.Fatalf("access log lacks %s:\n%s", field, logs)
			}
		}
	})

	t.Run("cohort", func(t *testing.T) {
		a.s.mux.HandleFunc("GET /test/cohort", func(w http.ResponseWriter, r *http.Request) {
			SetCohort(r.Context(), CohortOptimized)
			SetReadSource(r.Context(), "replica")
			a.s.readSource(w, r)
			writeJSON(w, 200, map[string]string{})
		})
		r := a.do("GET", "/test/cohort", "", nil)
		if r.header.Get("X-Read-Source") != "replica" {
			t.Fatalf("X-Read-Source %q", r.header.Get("X-Read-Source"))
		}
		if testutil.ToFloat64(a.s.metrics.requests.WithLabelValues("GET /test/cohort", "200", "optimized")) != 1 {
			t.Fatal("cohort label not set from the request")
		}
	})
}

// TestUnavailable: a primary that refuses connections, and a pool whose
// connections are all busy past the acquire bound, give 503 with
// Retry-After — never a 500.
func TestUnavailable(t *testing.T) {
	cursors, _ := chat.NewCursorCodec([]byte("0123456789abcdef0123456789abcdef"))
	t.Run("refused", func(t *testing.T) {
		a := startAPI(t, openRouter(t, "postgres://parley:x@127.0.0.1:1/parley?sslmode=disable&connect_timeout=1", 2), cursors)
		for _, r := range []response{
			a.do("GET", "/v1/me", "plt_whoever", nil),
			a.do("POST", "/v1/users", adminToken, map[string]string{"handle": "x"}),
		} {
			want(t, r, 503, chat.EUNAVAILABLE)
			if r.header.Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
			if strings.Contains(string(r.body), "127.0.0.1") || strings.Contains(string(r.body), "refused") {
				t.Fatalf("503 leaks internals: %s", r.body)
			}
		}
	})
	t.Run("pool exhausted", func(t *testing.T) {
		db := newAPI(t) // a migrated database
		a := startAPI(t, openRouter(t, stackDB(t, db), 1), cursors)
		held, err := a.pool.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer held.Release()
		start := time.Now()
		r := a.do("POST", "/v1/users", adminToken, map[string]string{"handle": "waiting"})
		want(t, r, 503, chat.EUNAVAILABLE)
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("503 after %v; the acquire bound is 500ms", d)
		}
	})
}

// stackDB is the URL of a's database (through PgBouncer).
func stackDB(t *testing.T, a *api) string {
	t.Helper()
	return a.pool.Config().ConnString()
}

// laggingReplica is a Reader standing in for a router: it runs reads on
// the store's pool but reports "replica", and for auth it has not yet
// replayed any user (every token is unknown there).
type laggingReplica struct{ a *api }

func (l laggingReplica) Read(ctx context.Context, endpoint string, fn func(context.Context, postgres.Querier) error) (string, error) {
	if endpoint == chat.EndpointAuth {
		return "replica", chat.Errorf(chat.EUNAUTHENTICATED, "unknown token")
	}
	return "replica", fn(ctx, l.a.pool)
}

// TestReaderSlot: a Reader chooses where reads run and X-Read-Source says
// so; a token unknown off the primary is checked on the primary.
func TestReaderSlot(t *testing.T) {
	base := newAPI(t)
	alice, bob := base.createUser(), base.createUser()
	c := base.createConversation(alice, bob)
	base.send(c.ID, bob, "hi")

	a := &api{t: t, store: base.store, pool: base.pool, reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	a.s = New(Config{Logger: slog.New(slog.NewJSONHandler(a.logs, nil)), Registerer: a.reg, Store: a.store,
		Reader: laggingReplica{a}, Cursors: base.s.cfg.Cursors, AdminToken: adminToken})
	a.srv = httptest.NewServer(a.s)
	t.Cleanup(a.srv.Close)
	a.client = a.srv.Client()

	for _, path := range []string{"/v1/me", "/v1/conversations", "/v1/conversations/" + c.ID, "/v1/conversations/" + c.ID + "/messages", "/v1/unread"} {
		r := a.do("GET", path, alice.Token, nil)
		want(t, r, 200, "")
		if src := r.header.Get("X-Read-Source"); src != "replica" && !(path == "/v1/me" && src == "primary") {
			t.Errorf("%s: X-Read-Source %q", path, src)
		}
	}
	want(t, a.do("GET", "/v1/me", "plt_unknown", nil), 401, chat.EUNAUTHENTICATED)
}

// TestReadSourceOnEveryReadResponse: the contract puts X-Read-Source on
// every read response, also when the read is refused before anything is
// read (no token, a malformed consistency header) or fails.
func TestReadSourceOnEveryReadResponse(t *testing.T) {
	a := newAPI(t)
	alice, bob, eve := a.createUser(), a.createUser(), a.createUser()
	c := a.createConversation(alice, bob)
	a.send(c.ID, bob, "hi")
	conv := "/v1/conversations/" + c.ID
	tests := []struct {
		name   string
		path   string
		token  string
		header []string
		status int
	}{
		{"me", "/v1/me", alice.Token, nil, 200},
		{"me: no token", "/v1/me", "", nil, 401},
		{"me: unknown token", "/v1/me", "plt_unknown", nil, 401},
		{"me: admin token", "/v1/me", adminToken, nil, 403},
		{"me: bad X-Consistency", "/v1/me", alice.Token, []string{"X-Consistency", "eventual"}, 400},
		{"list: no token", "/v1/conversations", "", nil, 401},
		{"list: bad consistency token", "/v1/conversations", alice.Token, []string{"X-Consistency-Token", "nope"}, 400},
		{"list: bad limit", "/v1/conversations?limit=0", alice.Token, nil, 400},
		{"conversation", conv, alice.Token, nil, 200},
		{"conversation: no token", conv, "", nil, 401},
		{"conversation: non-member", conv, eve.Token, nil, 404},
		{"history", conv + "/messages", alice.Token, []string{"X-Consistency", "strong"}, 200},
		{"history: no token", conv + "/messages", "", nil, 401},
		{"history: bad X-Consistency", conv + "/messages", alice.Token, []string{"X-Consistency", "weak"}, 400},
		{"history: bad cursor", conv + "/messages?before=zzz", alice.Token, nil, 400},
		{"unread", "/v1/unread", bob.Token, nil, 200},
		{"unread: no token", "/v1/unread", "", nil, 401},
		{"unread: bad consistency token", "/v1/unread", bob.Token, []string{"X-Consistency-Token", "0/XYZ"}, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := a.do("GET", tt.path, tt.token, nil, tt.header...)
			want(t, r, tt.status, "")
			switch src := r.header.Get("X-Read-Source"); src {
			case "primary", "replica", "cache":
			default:
				t.Fatalf("X-Read-Source %q on %d %s", src, r.status, r.body)
			}
		})
	}
}
