package stacktest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// Client is a minimal client of the Parley HTTP API for tests, as a client
// would use it: JSON in and out, bearer tokens. Its resource types are its
// own (not the server's), so a change of the wire format fails the tests.
//
// It checks every request it sends and every answer it gets against the
// API description, api/openapi.yaml (see openapi.go): a request that breaks
// it on purpose is sent with Invalid().Do.
type Client struct {
	T    testing.TB
	Base string // e.g. http://127.0.0.1:8080
	// HTTP sends the requests; it does not follow redirects (a redirect is
	// an answer to check like any other).
	HTTP *http.Client
	// AdminToken creates users (CreateUser).
	AdminToken string

	invalid bool
}

// NewClient returns a client of the API at base with its own transport.
func NewClient(tb testing.TB, base, adminToken string) *Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 128}
	tb.Cleanup(tr.CloseIdleConnections)
	return &Client{T: tb, Base: base, AdminToken: adminToken, HTTP: &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Invalid returns a client whose requests break the API description on
// purpose (malformed JSON, a missing field, an oversized body, a bad header
// or parameter, an undocumented path): the description must refuse each
// of them as the server does; the answers are still checked.
func (c *Client) Invalid() *Client {
	v := *c
	v.invalid = true
	return &v
}

// Reply is one answer.
type Reply struct {
	Status int
	Header http.Header
	Body   []byte
}

// Decode decodes the JSON body into v.
func (r Reply) Decode(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("HTTP %d %q: %v", r.Status, r.Body, err)
	}
}

// ErrorBody is the body of an error answer.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// Code is the error code of an error answer.
func (r Reply) Code(tb testing.TB) string {
	tb.Helper()
	var e ErrorBody
	r.Decode(tb, &e)
	return e.Error.Code
}

// Source is the answer's X-Read-Source.
func (r Reply) Source() string { return r.Header.Get("X-Read-Source") }

// Raw is a request body sent as it is (Do JSON-encodes any other body but
// string, []byte and io.Reader, which are sent as they are too).
type Raw string

// Do sends a request and returns the answer; header is name, value pairs
// (added, so a name may repeat; a Content-Type replaces JSON's). An io.Reader body is sent without a
// Content-Length (chunked). It may run on any goroutine: it reports failures
// — a request or an answer that breaks the API description included — with
// Error, not Fatal, and then returns a zero Reply for a failed exchange.
func (c *Client) Do(method, path, token string, body any, header ...string) Reply {
	c.T.Helper()
	var data []byte
	chunked := false
	switch b := body.(type) {
	case nil:
	case Raw:
		data = []byte(b)
	case string:
		data = []byte(b)
	case []byte:
		data = b
	case io.Reader:
		var err error
		if data, err = io.ReadAll(b); err != nil {
			c.T.Error(err)
			return Reply{}
		}
		chunked = true
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.T.Error(err)
			return Reply{}
		}
		data = j
	}
	var rd io.Reader
	switch {
	case chunked:
		rd = io.MultiReader(bytes.NewReader(data)) // no Content-Length
	case body != nil:
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, c.Base+path, rd)
	if err != nil {
		c.T.Error(err)
		return Reply{}
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if http.CanonicalHeaderKey(header[i]) == "Content-Type" {
			req.Header.Set(header[i], header[i+1]) // instead of JSON's
			continue
		}
		req.Header.Add(header[i], header[i+1])
	}
	spec, err := loadContract()
	if err != nil {
		c.T.Error(err)
		return Reply{}
	}
	x, err := spec.checkRequest(req, data, c.invalid)
	if err != nil {
		c.T.Errorf("openapi: %s: %v", describe(req, 0), err)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		c.T.Error(err)
		return Reply{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := Reply{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if err := spec.checkResponse(x, r); err != nil {
		c.T.Errorf("openapi: %s: %v\n%s", describe(req, r.Status), err, r.Body)
	}
	return r
}

// Must fails the test unless r has status, and returns r.
func (c *Client) Must(status int, r Reply) Reply {
	c.T.Helper()
	if r.Status != status {
		c.T.Fatalf("HTTP %d, want %d: %s", r.Status, status, r.Body)
	}
	return r
}

// Want fails the test unless r has status and, when code is not "", that
// error code.
func Want(tb testing.TB, r Reply, status int, code string) {
	tb.Helper()
	if r.Status != status {
		tb.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	if code != "" {
		if got := r.Code(tb); got != code {
			tb.Fatalf("error code %q, want %q: %s", got, code, r.Body)
		}
	}
}

// The API's resources, as a client decodes them.
type (
	User struct {
		ID          string `json:"id"`
		Handle      string `json:"handle"`
		DisplayName string `json:"display_name"`
		Token       string `json:"token"`
	}
	Message struct {
		ID             string `json:"id"`
		ConversationID string `json:"conversation_id"`
		SenderID       string `json:"sender_id"`
		Body           string `json:"body"`
		CreatedAt      string `json:"created_at"`
		Cursor         string `json:"cursor"`
	}
	Conversation struct {
		ID            string   `json:"id"`
		Title         string   `json:"title"`
		MemberIDs     []string `json:"member_ids"`
		CreatedAt     string   `json:"created_at"`
		LastMessageAt *string  `json:"last_message_at"`
		LastMessage   *Message `json:"last_message"`
		UnreadCount   int64    `json:"unread_count"`
	}
	MessagePage struct {
		Messages   []Message `json:"messages"`
		HasMore    bool      `json:"has_more"`
		NextCursor *string   `json:"next_cursor"`
	}
	ConversationList struct {
		Conversations []Conversation `json:"conversations"`
		NextCursor    *string        `json:"next_cursor"`
	}
	Unread struct {
		Total         int64 `json:"total"`
		Conversations []struct {
			ID          string `json:"id"`
			UnreadCount int64  `json:"unread_count"`
		} `json:"conversations"`
	}
)

var handleSeq atomic.Int64

// CreateUser creates a user with a fresh handle (the admin token's).
func (c *Client) CreateUser() User {
	c.T.Helper()
	h := fmt.Sprintf("u%d_%d", time.Now().UnixNano()%1e6, handleSeq.Add(1))
	var u User
	c.Must(201, c.Do("POST", "/v1/users", c.AdminToken, map[string]string{"handle": h, "display_name": "User " + h})).Decode(c.T, &u)
	return u
}

// CreateConversation creates a conversation of owner with members.
func (c *Client) CreateConversation(owner User, title string, members ...User) Conversation {
	c.T.Helper()
	ids := []string{}
	for _, m := range members {
		ids = append(ids, m.ID)
	}
	var conv Conversation
	c.Must(201, c.Do("POST", "/v1/conversations", owner.Token, map[string]any{"title": title, "member_ids": ids})).Decode(c.T, &conv)
	return conv
}

// Send sends body into conversation conv as from.
func (c *Client) Send(conv string, from User, body string) Message {
	c.T.Helper()
	var m Message
	c.Must(201, c.Do("POST", "/v1/conversations/"+conv+"/messages", from.Token, map[string]string{"body": body})).Decode(c.T, &m)
	return m
}

// Page reads a page of conv's history as as; query is "" or "?limit=…".
func (c *Client) Page(conv string, as User, query string) MessagePage {
	c.T.Helper()
	var p MessagePage
	c.Must(200, c.Do("GET", "/v1/conversations/"+conv+"/messages"+query, as.Token, nil)).Decode(c.T, &p)
	return p
}
