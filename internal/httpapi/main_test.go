package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/dbrouter"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/stack"
)

func TestMain(m *testing.M) { os.Exit(stack.Main(m)) }

const adminToken = "adm_test_token"

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// api is a real server (httptest) on a real store for one test.
type api struct {
	t      *testing.T
	srv    *httptest.Server
	s      *Server
	store  *postgres.Store
	pool   *pgxpool.Pool
	reg    *prometheus.Registry
	logs   *syncBuffer
	client *http.Client
}

// openRouter is a router on the primary at url only (exec mode: the URL may
// be PgBouncer's), with the 500 ms acquire bound the tests rely on.
func openRouter(t *testing.T, url string, maxConns int32) *dbrouter.Router {
	t.Helper()
	r, err := dbrouter.New(context.Background(), dbrouter.Config{
		PrimaryURL: url, PrimaryExecMode: "exec", PoolMaxConns: maxConns, AcquireTimeout: 500 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// newAPI serves the API on a fresh, migrated database through PgBouncer
// (the production topology, exec mode), reads and writes through a router.
func newAPI(t *testing.T) *api {
	t.Helper()
	db := stack.ForTest(t).NewDatabase(t)
	ctx := context.Background()
	r := openRouter(t, db.PgBouncerURL, 10)
	if _, err := postgres.Migrate(ctx, r.Primary(), nil); err != nil {
		t.Fatal(err)
	}
	key, err := postgres.CursorKey(ctx, r.Primary(), "")
	if err != nil {
		t.Fatal(err)
	}
	cursors, err := chat.NewCursorCodec(key)
	if err != nil {
		t.Fatal(err)
	}
	return startAPI(t, r, cursors)
}

func startAPI(t *testing.T, r *dbrouter.Router, cursors *chat.CursorCodec) *api {
	t.Helper()
	a := &api{t: t, store: postgres.New(r.Primary()), pool: r.Primary(),
		reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	log := slog.New(slog.NewJSONHandler(a.logs, nil))
	a.s = New(Config{Logger: log, Gatherer: a.reg, Registerer: a.reg, Store: a.store, Router: r, Cursors: cursors, AdminToken: adminToken,
		RequestTimeout: 5 * time.Second})
	a.srv = httptest.NewServer(a.s)
	t.Cleanup(a.srv.Close)
	a.client = a.srv.Client()
	return a
}

// response is one answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("response %d %q: %v", r.status, r.body, err)
	}
}

func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var e errorBody
	r.json(t, &e)
	return e.Error.Code
}

// do sends a request; body is sent as is when it is []byte or string, and
// JSON-encoded otherwise.
func (a *api) do(method, path, token string, body any, header ...string) response {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, a.srv.URL+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := a.client.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// want fails unless r has status (and, for errors, code).
func want(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if code != "" {
		if got := r.errorCode(t); got != code {
			t.Fatalf("error code %q, want %q: %s", got, code, r.body)
		}
	}
}

var handleSeq atomic.Int64

type testUser struct {
	ID, Handle, DisplayName, Token string
}

func (a *api) createUser() testUser {
	a.t.Helper()
	h := fmt.Sprintf("user%d", handleSeq.Add(1))
	r := a.do("POST", "/v1/users", adminToken, map[string]string{"handle": h, "display_name": "User " + h})
	want(a.t, r, 201, "")
	var u struct {
		ID          string `json:"id"`
		Handle      string `json:"handle"`
		DisplayName string `json:"display_name"`
		Token       string `json:"token"`
	}
	r.json(a.t, &u)
	return testUser{u.ID, u.Handle, u.DisplayName, u.Token}
}

func (a *api) createConversation(owner testUser, members ...testUser) conversationJSON {
	a.t.Helper()
	ids := []string{}
	for _, m := range members {
		ids = append(ids, m.ID)
	}
	r := a.do("POST", "/v1/conversations", owner.Token, map[string]any{"title": "t", "member_ids": ids})
	want(a.t, r, 201, "")
	var c conversationJSON
	r.json(a.t, &c)
	return c
}

func (a *api) send(conv string, from testUser, body string) messageJSON {
	a.t.Helper()
	r := a.do("POST", "/v1/conversations/"+conv+"/messages", from.Token, map[string]string{"body": body})
	want(a.t, r, 201, "")
	var m messageJSON
	r.json(a.t, &m)
	return m
}

// counts is a fingerprint of everything the API can write.
func (a *api) counts() string {
	a.t.Helper()
	var s string
	err := a.pool.QueryRow(context.Background(), `
		SELECT format('users=%s conversations=%s members=%s messages=%s markers=%s last=%s',
			(SELECT count(*) FROM users), (SELECT count(*) FROM conversations),
			(SELECT count(*) FROM conversation_members), (SELECT count(*) FROM messages),
			(SELECT coalesce(sum(last_read_seq), 0) FROM conversation_members),
			(SELECT coalesce(sum(last_seq), 0) FROM conversations))`).Scan(&s)
	if err != nil {
		a.t.Fatal(err)
	}
	return s
}
