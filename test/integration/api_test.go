package integration

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/chatsvc"
	"github.com/parley-chat/parley/internal/dbrouter"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/rollout"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

func TestAuth(t *testing.T) {
	svc := newService(t)
	a := svc.instance()
	alice := a.CreateUser()

	r := a.Do("GET", "/v1/me", "", nil)
	stacktest.Want(t, r, 401, chat.EUNAUTHENTICATED)
	if r.Header.Get("WWW-Authenticate") == "" {
		t.Error("401 without WWW-Authenticate")
	}
	stacktest.Want(t, a.Do("GET", "/v1/me", "plt_unknown", nil), 401, chat.EUNAUTHENTICATED)
	stacktest.Want(t, a.Do("GET", "/v1/me", "", nil, "Authorization", "Basic "+alice.Token), 401, chat.EUNAUTHENTICATED)
	stacktest.Want(t, a.Do("GET", "/v1/me", adminToken, nil), 403, chat.EPERMISSION)

	r = a.Do("GET", "/v1/me", alice.Token, nil)
	stacktest.Want(t, r, 200, "")
	var me user
	r.Decode(t, &me)
	if me.ID != alice.ID || me.Handle != alice.Handle || me.Token != "" || r.Header.Get("X-Read-Source") != "primary" {
		t.Fatalf("me = %+v (%s)", me, r.Header)
	}
	if !regexp.MustCompile(`^[1-9][0-9]*$`).MatchString(me.ID) || !strings.Contains(string(r.Body), `"id":"`) {
		t.Fatalf("id is not a JSON string of digits: %s", r.Body)
	}

	// Admin endpoint: user token 403, none or unknown 401.
	body := map[string]string{"handle": "bob"}
	stacktest.Want(t, a.Do("POST", "/v1/users", alice.Token, body), 403, chat.EPERMISSION)
	stacktest.Want(t, a.Do("POST", "/v1/users", "", body), 401, chat.EUNAUTHENTICATED)
	stacktest.Want(t, a.Do("POST", "/v1/users", "wrong-admin", body), 401, chat.EUNAUTHENTICATED)
	r = a.Do("POST", "/v1/users", adminToken, body)
	stacktest.Want(t, r, 201, "")
	var bob user
	r.Decode(t, &bob)
	if bob.DisplayName != "bob" || !strings.HasPrefix(bob.Token, "plt_") {
		t.Fatalf("created %+v", bob)
	}
	stacktest.Want(t, a.Do("POST", "/v1/users", adminToken, body), 409, chat.ECONFLICT)
	stacktest.Want(t, a.Invalid().Do("POST", "/v1/users", adminToken, map[string]string{"handle": "Bad Handle"}), 400, chat.EINVALID)
}

// wellFormedID is an id as api/openapi.yaml describes it.
var wellFormedID = regexp.MustCompile(`^[1-9][0-9]{0,18}$`)

func TestNonMembersGetNotFound(t *testing.T) {
	svc := newService(t)
	a := svc.instance()
	alice, bob, eve := a.CreateUser(), a.CreateUser(), a.CreateUser()
	c := a.CreateConversation(alice, "t", bob)
	m := a.Send(c.ID, alice, "private")
	before := svc.counts()
	for _, id := range []string{c.ID, "999999999", "abc", "0", "-1", "01"} {
		for _, tc := range []struct {
			method, path string
			body         any
			malformed    bool // breaks api/openapi.yaml on purpose
		}{
			{"GET", "/v1/conversations/" + id, nil, false},
			{"GET", "/v1/conversations/" + id + "/messages", nil, false},
			{"GET", "/v1/conversations/" + id + "/messages?before=" + m.Cursor, nil, false},
			{"POST", "/v1/conversations/" + id + "/messages", map[string]string{"body": "hi"}, false},
			{"POST", "/v1/conversations/" + id + "/read", map[string]string{"message_id": m.ID}, false},
			// Malformed requests too: a non-member learns nothing.
			{"GET", "/v1/conversations/" + id + "/messages?limit=0", nil, true},
			{"GET", "/v1/conversations/" + id + "/messages?after=garbage", nil, false},
			{"POST", "/v1/conversations/" + id + "/messages", `{"body":"  "}`, true},
			{"POST", "/v1/conversations/" + id + "/messages", `{"body":"` + strings.Repeat("x", 70000) + `"}`, true},
			{"POST", "/v1/conversations/" + id + "/read", `{"message_id":"x"}`, true},
		} {
			t.Run(tc.method+" "+tc.path[:min(len(tc.path), 60)], func(t *testing.T) {
				c := a.Client
				if tc.malformed || !wellFormedID.MatchString(id) {
					c = c.Invalid()
				}
				r := c.Do(tc.method, tc.path, eve.Token, tc.body)
				stacktest.Want(t, r, 404, chat.ENOTFOUND)
				if strings.Contains(string(r.Body), "private") {
					t.Fatalf("a 404 leaks content: %s", r.Body)
				}
			})
		}
	}
	if after := svc.counts(); after != before {
		t.Fatalf("non-member requests wrote: %s → %s", before, after)
	}
	// Members do see it.
	stacktest.Want(t, a.Do("GET", "/v1/conversations/"+c.ID, bob.Token, nil), 200, "")
}

// TestBadInput: each malformed request gets its documented status and code,
// and nothing is written.
func TestBadInput(t *testing.T) {
	svc := newService(t)
	a := svc.instance()
	alice, bob, carol := a.CreateUser(), a.CreateUser(), a.CreateUser()
	c := a.CreateConversation(alice, "t", bob)
	other := a.CreateConversation(carol, "t", alice)
	m := a.Send(c.ID, bob, "hello")
	foreign := a.Send(other.ID, carol, "elsewhere")
	// A list cursor of alice's (needs more than one page).
	for range 3 {
		a.CreateConversation(alice, "t")
	}
	var list conversationList
	r := a.Do("GET", "/v1/conversations?limit=1", alice.Token, nil)
	r.Decode(t, &list)
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
	// The requests api/openapi.yaml cannot refuse: their fault is in what
	// they mean (a cursor's signature, an id that exists elsewhere) or in
	// what the description does not say (invalid UTF-8, which JSON decoders
	// replace; a NUL); every other
	// row breaks the description on purpose.
	wellFormed := map[string]bool{
		"invalid UTF-8": true, "NUL": true, "two idempotency keys": true,
		"garbage cursor": true, "empty cursor": true, "foreign conversation's cursor": true,
		"list cursor as message cursor": true, "tampered cursor": true, "before and after": true,
		"list garbage cursor": true, "message cursor as list cursor": true, "another user's list cursor": true,
		"unknown member": true, "read: message of another conversation": true, "read: unknown message": true,
	}
	before := svc.counts()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := a.Client
			if !wellFormed[tt.name] {
				c = c.Invalid()
			}
			r := c.Do(tt.method, tt.path, tt.token, tt.body, tt.header...)
			stacktest.Want(t, r, tt.status, tt.code)
			var e stacktest.ErrorBody
			r.Decode(t, &e)
			if e.Error.Message == "" {
				t.Fatalf("no error message: %s", r.Body)
			}
		})
	}
	if after := svc.counts(); after != before {
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
	svc := newService(t)
	a := svc.instance()
	alice, bob := a.CreateUser(), a.CreateUser()
	c := a.CreateConversation(alice, "t", bob)
	if c.LastMessage != nil || c.LastMessageAt != nil || c.UnreadCount != 0 || len(c.MemberIDs) != 2 {
		t.Fatalf("new conversation %+v", c)
	}
	if !strings.Contains(string(a.Do("GET", "/v1/conversations/"+c.ID, alice.Token, nil).Body), `"last_message":null`) {
		t.Fatal("last_message is not null")
	}
	var sent []message
	for i := range 5 {
		sent = append(sent, a.Send(c.ID, alice, fmt.Sprintf("m%d", i)))
	}
	timeRE := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)
	for _, m := range sent {
		if !timeRE.MatchString(m.CreatedAt) || m.ConversationID != c.ID || m.SenderID != alice.ID || len(m.Cursor) != chat.CursorLen {
			t.Fatalf("message %+v", m)
		}
	}

	r := a.Do("GET", "/v1/conversations/"+c.ID+"/messages?limit=2", bob.Token, nil)
	stacktest.Want(t, r, 200, "")
	if r.Header.Get("X-Read-Source") != "primary" {
		t.Fatalf("X-Read-Source %q", r.Header.Get("X-Read-Source"))
	}
	var p messagePage
	r.Decode(t, &p)
	if len(p.Messages) != 2 || p.Messages[0].ID != sent[4].ID || !p.HasMore || p.NextCursor == nil {
		t.Fatalf("newest page %+v", p)
	}
	r = a.Do("GET", "/v1/conversations/"+c.ID+"/messages?limit=10&before="+*p.NextCursor, bob.Token, nil)
	p = messagePage{}
	r.Decode(t, &p)
	if len(p.Messages) != 3 || p.Messages[0].ID != sent[2].ID || p.HasMore || p.NextCursor != nil {
		t.Fatalf("older page %s", r.Body)
	}
	r = a.Do("GET", "/v1/conversations/"+c.ID+"/messages?limit=2&after="+sent[1].Cursor, bob.Token, nil)
	p = messagePage{}
	r.Decode(t, &p)
	if len(p.Messages) != 2 || p.Messages[0].ID != sent[2].ID || !p.HasMore || p.NextCursor == nil || *p.NextCursor != sent[3].Cursor {
		t.Fatalf("after page %s", r.Body)
	}
	// Caught up: empty, has_more false, next_cursor is the cursor to poll with.
	r = a.Do("GET", "/v1/conversations/"+c.ID+"/messages?after="+sent[4].Cursor, bob.Token, nil)
	p = messagePage{}
	r.Decode(t, &p)
	if len(p.Messages) != 0 || p.HasMore || p.NextCursor == nil || *p.NextCursor != sent[4].Cursor || !strings.Contains(string(r.Body), `"messages":[]`) {
		t.Fatalf("caught-up page %s", r.Body)
	}

	// Unread and read markers.
	var un unreadSummary
	a.Do("GET", "/v1/unread", bob.Token, nil).Decode(t, &un)
	if un.Total != 5 || len(un.Conversations) != 1 || un.Conversations[0].ID != c.ID {
		t.Fatalf("bob's unread %+v", un)
	}
	r = a.Do("POST", "/v1/conversations/"+c.ID+"/read", bob.Token, map[string]string{"message_id": sent[2].ID})
	stacktest.Want(t, r, 200, "")
	if !strings.Contains(string(r.Body), `"unread_count":2`) {
		t.Fatalf("read → %s", r.Body)
	}
	r = a.Do("POST", "/v1/conversations/"+c.ID+"/read", bob.Token, map[string]string{"message_id": sent[0].ID})
	if !strings.Contains(string(r.Body), `"unread_count":2`) {
		t.Fatalf("read backwards → %s (the marker must stay)", r.Body)
	}
	un = unreadSummary{}
	a.Do("GET", "/v1/unread", alice.Token, nil).Decode(t, &un)
	if un.Total != 0 || un.Conversations == nil {
		t.Fatalf("alice's unread %+v (own messages are never unread)", un)
	}

	// Idempotency over HTTP: 201 then 200 with the same message, 409 on another body.
	path := "/v1/conversations/" + c.ID + "/messages"
	r1 := a.Do("POST", path, bob.Token, map[string]string{"body": "once"}, "Idempotency-Key", "abc 123")
	r2 := a.Do("POST", path, bob.Token, map[string]string{"body": "once"}, "Idempotency-Key", "abc 123")
	stacktest.Want(t, r1, 201, "")
	stacktest.Want(t, r2, 200, "")
	var m1, m2 message
	r1.Decode(t, &m1)
	r2.Decode(t, &m2)
	if m1 != m2 {
		t.Fatalf("replay %+v != %+v", m2, m1)
	}
	stacktest.Want(t, a.Do("POST", path, bob.Token, map[string]string{"body": "twice"}, "Idempotency-Key", "abc 123"), 409, chat.ECONFLICT)
}

// TestUnavailable: a primary that refuses connections, and a pool whose
// connections are all busy past the acquire bound, give 503 with
// Retry-After — never a 500.
func TestUnavailable(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		a := refusedPrimary(t)
		for _, r := range []reply{
			a.Do("GET", "/v1/me", "plt_whoever", nil),
			a.Do("POST", "/v1/users", adminToken, map[string]string{"handle": "x"}),
		} {
			stacktest.Want(t, r, 503, chat.EUNAVAILABLE)
			if r.Header.Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
			if strings.Contains(string(r.Body), "127.0.0.1") || strings.Contains(string(r.Body), "refused") {
				t.Fatalf("503 leaks internals: %s", r.Body)
			}
		}
	})
	t.Run("pool exhausted", func(t *testing.T) {
		svc := newService(t)
		a := svc.instance(instanceOptions{primaryPoolConns: 1, acquireTimeout: 500 * time.Millisecond})
		held, err := a.router.Primary().Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer held.Release()
		start := time.Now()
		r := a.Do("POST", "/v1/users", adminToken, map[string]string{"handle": "waiting"})
		stacktest.Want(t, r, 503, chat.EUNAVAILABLE)
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("503 after %v; the acquire bound is 500ms", d)
		}
	})
}

// refusedPrimary is the API on a primary that refuses connections. A server
// cannot start that way (app.New reads the rollouts and the cursor key
// first), so it is put together from its parts as app.New does.
func refusedPrimary(t *testing.T) *stacktest.Client {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	r, err := dbrouter.New(context.Background(), dbrouter.Config{
		PrimaryURL:   "postgres://parley:x@127.0.0.1:1/parley?sslmode=disable&connect_timeout=1",
		PoolMaxConns: 2, AcquireTimeout: 500 * time.Millisecond, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	cursors, _ := chat.NewCursorCodec([]byte("0123456789abcdef0123456789abcdef"))
	svc, err := chatsvc.New(chatsvc.Config{Store: postgres.New(r.Primary()), Router: r,
		Rollouts: rollout.NewStore(r.Primary(), log, nil), Cursors: cursors, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.New(httpapi.Config{Logger: log, Service: svc, Admin: svc, Cursors: cursors,
		AdminToken: adminToken, RequestTimeout: 5 * time.Second}))
	t.Cleanup(srv.Close)
	return stacktest.NewClient(t, srv.URL, adminToken)
}

// TestNewUserOnLaggingReplica: a user created while the replica lags (replay
// paused) is known at once on every instance — the token lookup reads the
// primary — and the user's own writes are read back.
func TestNewUserOnLaggingReplica(t *testing.T) {
	svc := newService(t)
	a, b := svc.instance(), svc.instance()
	svc.optimize(a, false, true)
	svc.pauseReplay(t)
	alice, bob := a.CreateUser(), a.CreateUser()
	for _, in := range []*client{a, b} { // b has never seen these tokens
		r := in.Do("GET", "/v1/me", alice.Token, nil)
		stacktest.Want(t, r, 200, "")
		if src := r.Source(); src != "primary" {
			t.Errorf("/v1/me of a new user: X-Read-Source %q, want primary", src)
		}
	}
	c := b.CreateConversation(alice, "t", bob)
	m := b.Send(c.ID, alice, "hi")
	for _, in := range []*client{a, b} {
		p := in.Page(c.ID, alice, "")
		if len(p.Messages) != 1 || p.Messages[0].ID != m.ID {
			t.Errorf("alice's own message not read back: %+v", p)
		}
	}
	stacktest.Want(t, a.Do("GET", "/v1/unread", bob.Token, nil), 200, "")
}

// TestReadSourceOnEveryReadResponse: the contract puts X-Read-Source on
// every read reply, also when the read is refused before anything is
// read (no token, a malformed consistency header) or fails.
func TestReadSourceOnEveryReadResponse(t *testing.T) {
	svc := newService(t)
	a := svc.instance()
	alice, bob, eve := a.CreateUser(), a.CreateUser(), a.CreateUser()
	c := a.CreateConversation(alice, "t", bob)
	a.Send(c.ID, bob, "hi")
	conv := "/v1/conversations/" + c.ID
	tests := []struct {
		name   string
		path   string
		token  string
		header []string
		status int
		bad    bool // breaks api/openapi.yaml on purpose
	}{
		{"me", "/v1/me", alice.Token, nil, 200, false},
		{"me: no token", "/v1/me", "", nil, 401, false},
		{"me: unknown token", "/v1/me", "plt_unknown", nil, 401, false},
		{"me: admin token", "/v1/me", adminToken, nil, 403, false},
		{"me: bad X-Consistency", "/v1/me", alice.Token, []string{"X-Consistency", "eventual"}, 400, true},
		{"list: no token", "/v1/conversations", "", nil, 401, false},
		{"list: bad consistency token", "/v1/conversations", alice.Token, []string{"X-Consistency-Token", "nope"}, 400, true},
		{"list: bad limit", "/v1/conversations?limit=0", alice.Token, nil, 400, true},
		{"conversation", conv, alice.Token, nil, 200, false},
		{"conversation: no token", conv, "", nil, 401, false},
		{"conversation: non-member", conv, eve.Token, nil, 404, false},
		{"history", conv + "/messages", alice.Token, []string{"X-Consistency", "strong"}, 200, false},
		{"history: no token", conv + "/messages", "", nil, 401, false},
		{"history: bad X-Consistency", conv + "/messages", alice.Token, []string{"X-Consistency", "weak"}, 400, true},
		{"history: bad cursor", conv + "/messages?before=zzz", alice.Token, nil, 400, false},
		{"unread", "/v1/unread", bob.Token, nil, 200, false},
		{"unread: no token", "/v1/unread", "", nil, 401, false},
		{"unread: bad consistency token", "/v1/unread", bob.Token, []string{"X-Consistency-Token", "0/XYZ"}, 400, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := a.Client
			if tt.bad {
				c = c.Invalid()
			}
			r := c.Do("GET", tt.path, tt.token, nil, tt.header...)
			stacktest.Want(t, r, tt.status, "")
			switch src := r.Header.Get("X-Read-Source"); src {
			case "primary", "replica", "cache":
			default:
				t.Fatalf("X-Read-Source %q on %d %s", src, r.Status, r.Body)
			}
		})
	}
}
