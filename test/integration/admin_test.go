package integration

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestAdminEndpoints: who may call them, what they show, and how PUT
// /admin/rollouts validates its input (nothing changes on a rejected one).
func TestAdminEndpoints(t *testing.T) {
	svc := newService(t)
	a := svc.instance()
	u := a.CreateUser()

	for _, tc := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/admin/status", nil},
		{"GET", "/admin/rollouts", nil},
		{"PUT", "/admin/rollouts/message_history", map[string]int{"percent": 100}},
	} {
		if r := a.Do(tc.method, tc.path, u.Token, tc.body); r.Status != 403 || r.Code(t) != "permission_denied" {
			t.Errorf("user token on %s %s: %d %s", tc.method, tc.path, r.Status, r.Body)
		}
		if r := a.Do(tc.method, tc.path, "", tc.body); r.Status != 401 || r.Code(t) != "unauthenticated" {
			t.Errorf("no token on %s %s: %d %s", tc.method, tc.path, r.Status, r.Body)
		}
	}

	type state struct {
		Endpoint string `json:"endpoint"`
		Percent  int    `json:"percent"`
		Cache    bool   `json:"cache"`
		Replica  bool   `json:"replica"`
	}
	list := func() map[string]state {
		var l struct {
			Rollouts []state `json:"rollouts"`
		}
		a.Must(200, a.Do("GET", "/admin/rollouts", adminToken, nil)).Decode(t, &l)
		out := map[string]state{}
		for _, s := range l.Rollouts {
			out[s.Endpoint] = s
		}
		return out
	}
	initial := list()
	if len(initial) != 3 {
		t.Fatalf("rollouts %+v, want message_history, conversation_list, unread_count", initial)
	}
	for ep, s := range initial {
		if s.Percent != 0 || s.Cache || s.Replica {
			t.Fatalf("%s starts at %+v, want 0 %% without cache and replica", ep, s)
		}
	}

	// Any subset of the fields; the others stay.
	var st state
	a.Must(200, a.Do("PUT", "/admin/rollouts/message_history", adminToken, map[string]int{"percent": 25})).Decode(t, &st)
	if st != (state{"message_history", 25, false, false}) {
		t.Fatalf("after percent 25: %+v", st)
	}
	a.Must(200, a.Do("PUT", "/admin/rollouts/message_history", adminToken, map[string]bool{"cache": true})).Decode(t, &st)
	if st != (state{"message_history", 25, true, false}) {
		t.Fatalf("after cache on: %+v", st)
	}
	a.Must(200, a.Do("PUT", "/admin/rollouts/unread_count", adminToken, map[string]any{"percent": 100, "cache": true, "replica": true})).Decode(t, &st)
	if st != (state{"unread_count", 100, true, true}) {
		t.Fatalf("unread_count: %+v", st)
	}
	want := list()

	for _, tc := range []struct {
		name, path string
		body       stacktest.Raw
		status     int
		code       string
	}{
		{"percent over 100", "message_history", `{"percent":101}`, 400, "invalid_argument"},
		{"negative percent", "message_history", `{"percent":-1}`, 400, "invalid_argument"},
		{"percent as a string", "message_history", `{"percent":"50"}`, 400, "invalid_argument"},
		{"fractional percent", "message_history", `{"percent":50.5}`, 400, "invalid_argument"},
		{"cache not a boolean", "message_history", `{"cache":"yes"}`, 400, "invalid_argument"},
		{"unknown field", "message_history", `{"percent":10,"shadow":true}`, 400, "invalid_argument"},
		{"malformed JSON", "message_history", `{"percent":`, 400, "invalid_argument"},
		{"not an object", "message_history", `[1]`, 400, "invalid_argument"},
		{"empty body", "message_history", ``, 400, "invalid_argument"},
		{"trailing data", "message_history", `{"percent":10}{}`, 400, "invalid_argument"},
		{"unknown endpoint", "send_message", `{"percent":10}`, 404, "not_found"},
		{"unknown endpoint, bad body", "nope", `{"percent":1000}`, 404, "not_found"},
	} {
		r := a.Invalid().Do("PUT", "/admin/rollouts/"+tc.path, adminToken, tc.body) // breaks api/openapi.yaml on purpose
		if r.Status != tc.status || r.Code(t) != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, r.Status, r.Body, tc.status, tc.code)
		}
	}
	if got := list(); len(got) != len(want) || got["message_history"] != want["message_history"] || got["unread_count"] != want["unread_count"] {
		t.Fatalf("rejected updates changed the state: %+v, want %+v", got, want)
	}
	// An empty update is a read.
	a.Must(200, a.Do("PUT", "/admin/rollouts/message_history", adminToken, stacktest.Raw(`{}`))).Decode(t, &st)
	if st != want["message_history"] {
		t.Fatalf("empty update: %+v", st)
	}

	// /admin/status: replicas, cache, pools, this instance's rollouts, monitors.
	r := a.Must(200, a.Do("GET", "/admin/status", adminToken, nil))
	var raw map[string]json.RawMessage
	r.Decode(t, &raw)
	for _, k := range []string{"replicas", "cache", "pools", "rollouts", "monitors"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("/admin/status has no %q: %s", k, r.Body)
		}
	}
	s := a.status()
	if len(s.Replicas) != len(svc.db.ReplicaURLs) {
		t.Errorf("replicas %+v, want %d", s.Replicas, len(svc.db.ReplicaURLs))
	}
	for i, r := range s.Replicas {
		if r.Name != fmt.Sprint("replica", i+1) || r.State != "healthy" || r.Breaker != "closed" {
			t.Errorf("replica %d: %+v", i+1, r)
		}
	}
	var rep []map[string]any
	_ = json.Unmarshal(raw["replicas"], &rep)
	for _, k := range []string{"name", "state", "lag_bytes", "lag_seconds", "breaker", "reads"} {
		if _, ok := rep[0][k]; !ok {
			t.Errorf("replica entry without %q: %s", k, raw["replicas"])
		}
	}
	if s.Cache.State != "up" || s.Pools["primary"] == nil || s.Pools["replica1"] == nil {
		t.Errorf("cache %+v pools %v", s.Cache, s.Pools)
	}
	if ro := s.Rollouts["unread_count"]; ro.Percent != 100 || !ro.Cache || !ro.Replica || len(s.Rollouts) != 3 {
		t.Errorf("status rollouts %+v", s.Rollouts)
	}
}

// TestConsistencyHeaders: malformed consistency headers are 400, every
// write returns a token that every read accepts back, and every read answer
// says where it was served from, errors included. (That a read with the
// token shows the write when nothing else would is TestReadYourWrites's
// "token in the header" cases, on a lagging replica.)
func TestConsistencyHeaders(t *testing.T) {
	svc := newService(t)
	a := svc.instance()
	u, v := a.CreateUser(), a.CreateUser()
	conv := a.CreateConversation(u, "", v)
	sent := a.Must(201, a.Do("POST", "/v1/conversations/"+conv.ID+"/messages", u.Token, map[string]string{"body": "x"}))
	token := sent.Header.Get("X-Consistency-Token")
	if token == "" {
		t.Fatal("a send without X-Consistency-Token")
	}
	for _, path := range []string{"/v1/conversations/" + conv.ID + "/messages", "/v1/conversations", "/v1/conversations/" + conv.ID, "/v1/unread", "/v1/me"} {
		for _, h := range [][]string{
			{"X-Consistency-Token", "not-a-token"},
			{"X-Consistency-Token", "0/XYZ"},
			{"X-Consistency", "eventual"},
		} {
			if r := a.Invalid().Do("GET", path, u.Token, nil, h...); r.Status != 400 || r.Code(t) != "invalid_argument" {
				t.Errorf("%s with %s: %v: %d %s", path, h[0], h[1], r.Status, r.Body)
			}
		}
		for _, h := range [][]string{nil, {"X-Consistency-Token", token}, {"X-Consistency", "strong"}} {
			r := a.Must(200, a.Do("GET", path, v.Token, nil, h...))
			if src := r.Source(); src != "primary" && src != "replica" && src != "cache" {
				t.Errorf("%s %v: X-Read-Source %q", path, h, src)
			}
		}
	}
	if r := a.Do("GET", "/v1/conversations/999999/messages", v.Token, nil); r.Status != 404 || r.Source() == "" {
		t.Errorf("a 404 read: %d, X-Read-Source %q", r.Status, r.Source())
	}
	for _, w := range []reply{
		a.Do("POST", "/v1/conversations", u.Token, map[string]any{"member_ids": []string{v.ID}}),
		a.Do("POST", "/v1/conversations/"+conv.ID+"/read", v.Token, map[string]string{"message_id": mustID(t, sent)}),
		a.Do("POST", "/v1/users", adminToken, map[string]string{"handle": "tok" + u.Handle}),
	} {
		if w.Status/100 != 2 || w.Header.Get("X-Consistency-Token") == "" {
			t.Errorf("write %d without X-Consistency-Token: %s", w.Status, w.Body)
		}
	}
}

func mustID(t *testing.T, r reply) string {
	t.Helper()
	var m message
	r.Decode(t, &m)
	return m.ID
}
