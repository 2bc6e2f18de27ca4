// Package integration drives the whole service over HTTP: the real handler
// (httpapi.New) on the real store, through PgBouncer to the PostgreSQL of the
// test stack, as a client would.
package integration

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
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/stack"
)

func TestMain(m *testing.M) { os.Exit(stack.Main(m)) }

const adminToken = "adm_integration"

// service is one database and any number of API instances on it.
type service struct {
	t    *testing.T
	db   stack.Database
	pool *pgxpool.Pool // for assertions
}

func newService(t *testing.T) *service {
	t.Helper()
	db := stack.ForTest(t).NewDatabase(t)
	pool := openPool(t, db.PgBouncerURL, 4)
	if _, err := postgres.Migrate(context.Background(), pool, nil); err != nil {
		t.Fatal(err)
	}
	return &service{t: t, db: db, pool: pool}
}

func openPool(t *testing.T, url string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec // PgBouncer, transaction pooling
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// instance starts one API server as `parley serve` wires it: its own pool
// through PgBouncer, the cursor key from the database.
func (s *service) instance() *client {
	t := s.t
	t.Helper()
	pool := openPool(t, s.db.PgBouncerURL, 10)
	key, err := postgres.CursorKey(context.Background(), pool, "")
	if err != nil {
		t.Fatal(err)
	}
	cursors, err := chat.NewCursorCodec(key)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	h := httpapi.New(httpapi.Config{
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Gatherer:   reg,
		Registerer: reg,
		Store:      postgres.New(pool),
		Cursors:    cursors,
		AdminToken: adminToken,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: 32}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, base: srv.URL, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// client is a minimal API client.
type client struct {
	t    *testing.T
	base string
	hc   *http.Client
}

type reply struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r reply) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("HTTP %d %q: %v", r.Status, r.Body, err)
	}
}

func (r reply) code(t *testing.T) string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	r.decode(t, &e)
	return e.Error.Code
}

// do may run on any goroutine: it reports failures with t.Error, not Fatal.
func (c *client) do(method, path, token string, body any, header ...string) reply {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Error(err)
			return reply{}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Error(err)
		return reply{}
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Error(err)
		return reply{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func (c *client) must(status int, r reply) reply {
	c.t.Helper()
	if r.Status != status {
		c.t.Fatalf("HTTP %d, want %d: %s", r.Status, status, r.Body)
	}
	return r
}

type user struct {
	ID          string `json:"id"`
	Handle      string `json:"handle"`
	DisplayName string `json:"display_name"`
	Token       string `json:"token"`
}

type message struct {
	ID             string `json:"id"`
	ConversationID string `json:"conversation_id"`
	SenderID       string `json:"sender_id"`
	Body           string `json:"body"`
	CreatedAt      string `json:"created_at"`
	Cursor         string `json:"cursor"`
}

type conversation struct {
	ID            string   `json:"id"`
	Title         string   `json:"title"`
	MemberIDs     []string `json:"member_ids"`
	CreatedAt     string   `json:"created_at"`
	LastMessageAt *string  `json:"last_message_at"`
	LastMessage   *message `json:"last_message"`
	UnreadCount   int64    `json:"unread_count"`
}

type messagePage struct {
	Messages   []message `json:"messages"`
	HasMore    bool      `json:"has_more"`
	NextCursor *string   `json:"next_cursor"`
}

var seq atomic.Int64

func (c *client) createUser() user {
	c.t.Helper()
	h := fmt.Sprintf("it%d", seq.Add(1))
	var u user
	c.must(201, c.do("POST", "/v1/users", adminToken, map[string]string{"handle": h, "display_name": "Integration " + h})).decode(c.t, &u)
	return u
}

func (c *client) createConversation(owner user, title string, members ...user) conversation {
	c.t.Helper()
	ids := []string{}
	for _, m := range members {
		ids = append(ids, m.ID)
	}
	var conv conversation
	c.must(201, c.do("POST", "/v1/conversations", owner.Token, map[string]any{"title": title, "member_ids": ids})).decode(c.t, &conv)
	return conv
}

func (c *client) send(conv string, from user, body string) message {
	c.t.Helper()
	var m message
	c.must(201, c.do("POST", "/v1/conversations/"+conv+"/messages", from.Token, map[string]string{"body": body})).decode(c.t, &m)
	return m
}

func (c *client) page(conv string, as user, query string) messagePage {
	c.t.Helper()
	var p messagePage
	c.must(200, c.do("GET", "/v1/conversations/"+conv+"/messages"+query, as.Token, nil)).decode(c.t, &p)
	return p
}
