package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/sync/errgroup"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// DataSize is how much data a scenario creates through the API before its
// timed part.
type DataSize struct {
	Users         int `json:"users" yaml:"users"`
	Conversations int `json:"conversations" yaml:"conversations"`
	Messages      int `json:"messages" yaml:"messages"`
}

func (d DataSize) scaled(f float64) DataSize {
	u := max(4, int(math.Round(float64(d.Users)*f)))
	c := max(2, int(math.Round(float64(d.Conversations)*f)))
	m := max(2*c, int(math.Round(float64(d.Messages)*f)))
	return DataSize{Users: u, Conversations: c, Messages: m}
}

// zipfExponent skews conversation popularity: conversation k (0-based rank)
// gets weight 1/(k+1)^s for both history size and traffic.
const zipfExponent = 1.1

type user struct {
	id, token string
}

type conversation struct {
	id      string
	members []int // indexes into dataset.users
	mu      sync.Mutex
	cursors []string // sampled message cursors, entry points for deep history
	seen    int
}

// dataset is what a scenario created: users, their conversations (ordered
// by popularity rank) and their history.
type dataset struct {
	users []user
	convs []*conversation
}

// SetupInfo describes the data a scenario created.
type SetupInfo struct {
	Users         int     `json:"users"`
	Conversations int     `json:"conversations"`
	Messages      int     `json:"messages"`
	Seconds       float64 `json:"seconds"`
}

// apiClient drives Parley's HTTP API for the setup phase (plain net/http:
// the setup is not measured).
type apiClient struct {
	base       string
	adminToken string
	hc         *http.Client
}

func newAPIClient(base, adminToken string, timeout time.Duration) *apiClient {
	tr := &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	return &apiClient{base: base, adminToken: adminToken, hc: &http.Client{Transport: tr, Timeout: timeout}}
}

func (a *apiClient) close() { a.hc.CloseIdleConnections() }

// apiError is a non-2xx answer from the API.
type apiError struct {
	status int
	body   string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

// setupAttempts bounds the tries of one setup request: about 20 s of
// backing off (more with a server's Retry-After), so that a server that
// sheds load while the data is created (its concurrency limit still low)
// slows the setup down instead of failing it.
const setupAttempts = 10

// do sends one JSON request, retrying transient failures (connection
// errors, 503) — after the server's Retry-After when it gives one — and
// decodes a 2xx answer into out.
func (a *apiClient) do(ctx context.Context, method, path, token, idemKey string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
	}
	var last error
	var retryAfter time.Duration // the server's Retry-After on its last 503
	for attempt := range setupAttempts {
		if attempt > 0 {
			select {
			case <-time.After(max(min(time.Duration(100<<attempt)*time.Millisecond, 2*time.Second), retryAfter)):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		req, err := http.NewRequestWithContext(ctx, method, a.base+path, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", userAgent)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if idemKey != "" {
			req.Header.Set("Idempotency-Key", idemKey)
		}
		resp, err := a.hc.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			last = fmt.Errorf("%s %s: %w", method, path, err)
			continue
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			last = fmt.Errorf("%s %s: read body: %w", method, path, err)
			continue
		}
		if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests {
			// A shedding server says when to come back (seconds; capped).
			if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
				retryAfter = min(time.Duration(secs)*time.Second, 5*time.Second)
			}
			last = fmt.Errorf("%s %s: %w", method, path, &apiError{resp.StatusCode, string(bytes.TrimSpace(data))})
			continue
		}
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("%s %s: %w", method, path, &apiError{resp.StatusCode, string(bytes.TrimSpace(data))})
		}
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				return fmt.Errorf("%s %s: decode: %w", method, path, err)
			}
		}
		return nil
	}
	return last
}

// setupData creates size's users, conversations and messages through the
// API. Conversation k (by rank) gets a Zipf share of the messages. Handles
// carry runID so that runs never collide.
func setupData(ctx context.Context, api *apiClient, size DataSize, runID string, seed uint64, progress io.Writer, label string) (*dataset, SetupInfo, error) {
	start := time.Now()
	rng := rand.New(rand.NewPCG(seed, 0x5e7))
	ds := &dataset{users: make([]user, size.Users), convs: make([]*conversation, size.Conversations)}
	var users, convs, msgs atomic.Int64
	stopProgress := startProgress(progress, func() string {
		return fmt.Sprintf("[%s] setup: users %d/%d, conversations %d/%d, messages %d/%d",
			label, users.Load(), size.Users, convs.Load(), size.Conversations, msgs.Load(), size.Messages)
	})
	defer stopProgress()

	// Users.
	err := parallel(ctx, size.Users, 32, func(ctx context.Context, i int) error {
		u, err := createUser(ctx, api, runID, i)
		if err != nil {
			return err
		}
		ds.users[i] = u
		users.Add(1)
		return nil
	})
	if err != nil {
		return nil, SetupInfo{}, err
	}

	// Conversations: 2–8 members each, the creator first.
	for i := range ds.convs {
		n := min(size.Users, 2+rng.IntN(7))
		perm := rng.Perm(size.Users)[:n]
		ds.convs[i] = &conversation{members: perm}
	}
	err = parallel(ctx, size.Conversations, 32, func(ctx context.Context, i int) error {
		c := ds.convs[i]
		ids := make([]string, 0, len(c.members)-1)
		for _, m := range c.members[1:] {
			ids = append(ids, ds.users[m].id)
		}
		var out struct {
			ID string `json:"id"`
		}
		in := map[string]any{"title": fmt.Sprintf("load %s #%d", runID, i), "member_ids": ids}
		if err := api.do(ctx, "POST", "/v1/conversations", ds.users[c.members[0]].token, "", in, &out); err != nil {
			return fmt.Errorf("create conversation %d: %w", i, err)
		}
		if out.ID == "" {
			return fmt.Errorf("create conversation %d: answer lacks id", i)
		}
		c.id = out.ID
		convs.Add(1)
		return nil
	})
	if err != nil {
		return nil, SetupInfo{}, err
	}

	// History: every conversation gets two messages, the rest is shared out
	// by Zipf weight, so popular conversations have deep histories.
	counts := zipfShares(size.Conversations, size.Messages)
	type job struct{ conv, seq int }
	jobs := make([]job, 0, size.Messages)
	for ci, n := range counts {
		for s := range n {
			jobs = append(jobs, job{ci, s})
		}
	}
	rng.Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })
	senders := make([]int, len(jobs))
	for i, j := range jobs {
		m := ds.convs[j.conv].members
		senders[i] = m[rng.IntN(len(m))]
	}
	err = parallel(ctx, len(jobs), 32, func(ctx context.Context, i int) error {
		j := jobs[i]
		c := ds.convs[j.conv]
		var out struct {
			ID     string `json:"id"`
			Cursor string `json:"cursor"`
		}
		in := map[string]string{"body": fmt.Sprintf("seed message %d of conversation %d (%s)", j.seq, j.conv, runID)}
		key := fmt.Sprintf("lg-%s-seed-%d", runID, i)
		if err := api.do(ctx, "POST", "/v1/conversations/"+c.id+"/messages", ds.users[senders[i]].token, key, in, &out); err != nil {
			return fmt.Errorf("send seed message: %w", err)
		}
		c.sample(out.Cursor, uint64(i))
		msgs.Add(1)
		return nil
	})
	if err != nil {
		return nil, SetupInfo{}, err
	}
	info := SetupInfo{Users: size.Users, Conversations: size.Conversations, Messages: size.Messages,
		Seconds: round3(time.Since(start).Seconds())}
	return ds, info, nil
}

// sample keeps up to 8 cursors of the conversation (reservoir sampling).
func (c *conversation) sample(cursor string, r uint64) {
	if cursor == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen++
	if len(c.cursors) < 8 {
		c.cursors = append(c.cursors, cursor)
		return
	}
	if k := int(r % uint64(c.seen)); k < 8 {
		c.cursors[k] = cursor
	}
}

// zipfShares splits total messages over n conversations: two each, the
// rest by Zipf weight of rank.
func zipfShares(n, total int) []int {
	out := make([]int, n)
	rest := total - 2*n
	var sum float64
	w := make([]float64, n)
	for k := range n {
		w[k] = 1 / math.Pow(float64(k+1), zipfExponent)
		sum += w[k]
	}
	given := 0
	for k := range n {
		out[k] = 2
		if rest > 0 {
			extra := int(float64(rest) * w[k] / sum)
			out[k] += extra
			given += extra
		}
	}
	for k := 0; rest > 0 && given < rest; k = (k + 1) % n {
		out[k]++
		given++
	}
	return out
}

// parallel runs fn(0..n-1) on up to width goroutines; the first error
// cancels the rest and is returned.
func parallel(ctx context.Context, n, width int, fn func(ctx context.Context, i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(width, 1))
	for i := range n {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return fn(gctx, i) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// startProgress prints line() to w once a second until the returned stop
// function is called (w nil: nothing).
func startProgress(w io.Writer, line func() string) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintln(w, line())
				return
			case <-t.C:
				fmt.Fprintln(w, line())
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// createUser creates the run's user i through the API.
func createUser(ctx context.Context, api *apiClient, runID string, i int) (user, error) {
	var out struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	handle := fmt.Sprintf("lg_%s_%d", runID, i)
	// A 503 whose write the server could not confirm may have made the
	// user: the retry then finds the handle taken (409), and only the first
	// answer had the token. Such a user is left unused and the next handle
	// tried (handles carry runID: nothing else takes them).
	for again := 1; ; again++ {
		in := map[string]string{"handle": handle, "display_name": "Load " + strconv.Itoa(i)}
		err := api.do(ctx, "POST", "/v1/users", api.adminToken, "", in, &out)
		var ae *apiError
		if errors.As(err, &ae) && ae.status == http.StatusConflict && again < 3 {
			handle = fmt.Sprintf("lg_%s_%d_%d", runID, i, again)
			continue
		}
		if err != nil {
			return user{}, fmt.Errorf("create user %s: %w", handle, err)
		}
		break
	}
	if out.ID == "" || out.Token == "" {
		return user{}, fmt.Errorf("create user %s: answer lacks id or token", handle)
	}
	return user{id: out.ID, token: out.Token}, nil
}
