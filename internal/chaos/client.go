package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// api is a small client of Parley's HTTP API, as a real client uses it:
// JSON, bearer tokens, a timeout per request. Its resource types are its
// own, so that a change of the wire format shows.
type api struct {
	http    *http.Client
	timeout time.Duration
}

func newAPI(timeout time.Duration) *api {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 60 * time.Second,
		DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext}
	return &api{http: &http.Client{Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, timeout: timeout}
}

func (a *api) close() { a.http.CloseIdleConnections() }

// reply is one exchange's outcome: Status 0 means no answer (Err says why).
type reply struct {
	Status     int
	Header     http.Header
	Body       []byte
	Err        error
	Start, End time.Time
}

func (r reply) latency() time.Duration { return r.End.Sub(r.Start) }

// do sends one request; ctx may end it early (a client that hangs up).
func (a *api) do(ctx context.Context, method, url, token string, body any, header ...string) reply {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return reply{Err: err}
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return reply{Err: err}
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	r := reply{Start: time.Now()}
	resp, err := a.http.Do(req)
	if err != nil {
		r.End, r.Err = time.Now(), err
		return r
	}
	defer resp.Body.Close()
	r.Body, err = io.ReadAll(resp.Body)
	r.End = time.Now()
	if err != nil {
		r.Err = err
		return r
	}
	r.Status, r.Header = resp.StatusCode, resp.Header
	return r
}

// class names a reply's outcome for the report (Jepsen's ok / fail / info):
// "ok" (2xx); "unavailable" (503 with Retry-After); "503_no_retry_after";
// "http_4xx", "http_5xx"; "timeout" (the client gave up); "aborted" (the
// client hung up on purpose); "conn" (refused, reset, EOF).
func (r reply) class() string {
	switch {
	case r.Status >= 200 && r.Status < 300:
		return "ok"
	case r.Status == http.StatusServiceUnavailable && r.Header.Get("Retry-After") != "":
		return "unavailable"
	case r.Status == http.StatusServiceUnavailable:
		return "503_no_retry_after"
	case r.Status >= 500:
		return "http_5xx"
	case r.Status >= 400:
		return "http_4xx"
	case errors.Is(r.Err, context.Canceled):
		return "aborted"
	case errors.Is(r.Err, context.DeadlineExceeded):
		return "timeout"
	}
	var ne net.Error
	if errors.As(r.Err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "conn"
}

// retryAfter is the reply's Retry-After in seconds (0 when absent).
func (r reply) retryAfter() time.Duration {
	s, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || s < 0 {
		return 0
	}
	return time.Duration(s) * time.Second
}

func (r reply) decode(v any) error {
	if err := json.Unmarshal(r.Body, v); err != nil {
		return fmt.Errorf("HTTP %d %.200q: %w", r.Status, r.Body, err)
	}
	return nil
}

func (r reply) failure(what string) error {
	if r.Err != nil {
		return fmt.Errorf("%s: %w", what, r.Err)
	}
	return fmt.Errorf("%s: HTTP %d %.300s", what, r.Status, r.Body)
}

// The API's resources, as this client reads them.
type (
	userJSON struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	messageJSON struct {
		ID             string    `json:"id"`
		ConversationID string    `json:"conversation_id"`
		SenderID       string    `json:"sender_id"`
		Body           string    `json:"body"`
		CreatedAt      time.Time `json:"created_at"`
	}
	conversationJSON struct {
		ID          string       `json:"id"`
		LastMessage *messageJSON `json:"last_message"`
		UnreadCount int64        `json:"unread_count"`
	}
	pageJSON struct {
		Messages   []messageJSON `json:"messages"`
		NextCursor *string       `json:"next_cursor"`
	}
	listJSON struct {
		Conversations []conversationJSON `json:"conversations"`
	}
	unreadJSON struct {
		Conversations []struct {
			ID          string `json:"id"`
			UnreadCount int64  `json:"unread_count"`
		} `json:"conversations"`
	}
	statusJSON struct {
		Replicas []struct {
			Name    string `json:"name"`
			State   string `json:"state"`
			Breaker string `json:"breaker"`
		} `json:"replicas"`
		Cache struct {
			State string `json:"state"`
		} `json:"cache"`
		Rollouts map[string]struct {
			Percent int  `json:"percent"`
			Cache   bool `json:"cache"`
			Replica bool `json:"replica"`
		} `json:"rollouts"`
	}
)
