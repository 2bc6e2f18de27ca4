package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/app"
	"github.com/parley-chat/parley/internal/stack"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestServeWiring runs the real serve() with everything configured (replica,
// Redis, PgBouncer's admin console) and checks that each part is in use:
// rollouts through the admin API, the cache and the replica on the history
// endpoint, consistency tokens on writes, the monitors in /admin/status and
// every component's metrics on /metrics.
func TestServeWiring(t *testing.T) {
	s := stacktest.ForTest(t)
	db := s.NewDatabase(t)
	if err := migrate(context.Background(), db.PrimaryURL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	cfg := serveConfig{HTTPAddr: "127.0.0.1:0", AccessLogShare: 1, Config: app.Config{
		PrimaryURL: db.PgBouncerURL, PrimaryExecMode: "exec",
		ReplicaURLs: []string{db.ReplicaURL}, ReplicaExecMode: "cache_statement",
		RedisURL: s.RedisURL(), CachePrefix: db.Name + ":", PgBouncerAdminURL: s.PgBouncerAdminURL(),
		AdminToken: "test-admin", ShutdownTimeout: 5 * time.Second, PrimaryPoolConns: 8, ReplicaPoolConns: 8,
	}}
	go func() { done <- serve(ctx, cfg, func(a string) { addrc <- a }) }()
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start")
	}

	call := func(method, path, token string, body any, wantStatus int, out any) http.Header {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != wantStatus {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				t.Fatalf("%s %s: %q: %v", method, path, b, err)
			}
		}
		return resp.Header
	}
	type user struct{ ID, Token string }
	var alice, bob user
	call("POST", "/v1/users", "test-admin", map[string]string{"handle": "alice"}, 201, &alice)
	call("POST", "/v1/users", "test-admin", map[string]string{"handle": "bob"}, 201, &bob)
	var conv struct{ ID string }
	call("POST", "/v1/conversations", alice.Token, map[string]any{"member_ids": []string{bob.ID}}, 201, &conv)
	if h := call("POST", "/v1/conversations/"+conv.ID+"/messages", alice.Token, map[string]string{"body": "hi"}, 201, nil); h.Get("X-Consistency-Token") == "" {
		t.Fatal("a send without X-Consistency-Token")
	}
	if err := stack.WaitReplicaCaughtUp(ctx, db.PrimaryURL, db.ReplicaURL); err != nil {
		t.Fatal(err)
	}

	history := "/v1/conversations/" + conv.ID + "/messages"
	if src := call("GET", history, bob.Token, nil, 200, nil).Get("X-Read-Source"); src != "primary" {
		t.Fatalf("baseline read from %q", src)
	}
	call("PUT", "/admin/rollouts/message_history", "test-admin", map[string]any{"percent": 100, "replica": true}, 200, nil)
	deadline := time.Now().Add(3 * time.Second)
	for call("GET", history, bob.Token, nil, 200, nil).Get("X-Read-Source") != "replica" {
		if time.Now().After(deadline) {
			t.Fatal("no read from the replica with the rollout on")
		}
		time.Sleep(20 * time.Millisecond)
	}
	call("PUT", "/admin/rollouts/message_history", "test-admin", map[string]any{"cache": true}, 200, nil)
	call("GET", history, bob.Token, nil, 200, nil)
	if src := call("GET", history, bob.Token, nil, 200, nil).Get("X-Read-Source"); src != "cache" {
		t.Fatalf("repeat read with the cache on from %q", src)
	}

	var st struct {
		Replicas []struct{ Name, State, Breaker string } `json:"replicas"`
		Cache    struct{ State string }                  `json:"cache"`
		Pools    map[string]any                          `json:"pools"`
		Rollouts map[string]struct{ Percent int }        `json:"rollouts"`
		Monitors map[string]json.RawMessage              `json:"monitors"`
	}
	call("GET", "/admin/status", "test-admin", nil, 200, &st)
	if len(st.Replicas) != 1 || st.Replicas[0].Breaker != "closed" || st.Cache.State != "up" || st.Pools["replica1"] == nil ||
		st.Rollouts["message_history"].Percent != 100 || st.Monitors["pgbouncer"] == nil || st.Monitors["queries"] == nil {
		t.Fatalf("/admin/status = %+v", st)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, fam := range []string{
		"parley_http_requests_total", "parley_db_query_duration_seconds", "parley_db_reads_total", "parley_replica_breaker_state",
		"parley_cache_requests_total", "parley_rollout_percent", "parley_db_autovacuum_settings_drift", "parley_monitor_last_success_timestamp_seconds",
		"parley_pgbouncer_up", "go_goroutines",
	} {
		if !strings.Contains(string(mb), "# TYPE "+fam+" ") {
			t.Errorf("/metrics lacks %s", fam)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after shutdown", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not shut down")
	}
}
