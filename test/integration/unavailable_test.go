package integration

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// wantUnavailable checks the contract's 503: code unavailable, Retry-After,
// and nothing of the cause in the body (it goes to the log): no driver or
// PgBouncer message, address, SQLSTATE or database name.
func wantUnavailable(t *testing.T, what string, r reply, internals ...string) {
	t.Helper()
	if r.Status != 503 || r.Code(t) != chat.EUNAVAILABLE {
		t.Errorf("%s: %d %s, want 503 unavailable", what, r.Status, r.Body)
		return
	}
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("%s: Retry-After %q, want a number of seconds", what, r.Header.Get("Retry-After"))
	}
	body := strings.ToLower(string(r.Body))
	for _, s := range append(internals, "pgbouncer", "query_wait_timeout", "server_login_retry", "login", "sqlstate",
		"08p01", "127.0.0.1", "postgres", "dial", "refused", "deadline", "context", "pool") {
		if s != "" && strings.Contains(body, strings.ToLower(s)) {
			t.Errorf("%s: the 503 body shows %q: %s", what, s, r.Body)
		}
	}
}

// pgbouncerSetting reads one setting of the running PgBouncer (SHOW CONFIG).
func pgbouncerSetting(t *testing.T, s *stacktest.Stack, key string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(s.PgBouncerAdminURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SHOW CONFIG")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		if v := rows.RawValues(); string(v[0]) == key {
			secs, err := strconv.ParseFloat(string(v[1]), 64)
			if err != nil {
				t.Fatalf("%s = %q", key, v[1])
			}
			return time.Duration(secs * float64(time.Second))
		}
	}
	t.Fatalf("SHOW CONFIG has no %s", key)
	return 0
}

// TestUnavailableBehindPgBouncer: the API on the primary through PgBouncer
// configured as deploy/pgbouncer.ini (the stack's), when the database cannot
// serve. Every answer is 503 with Retry-After and nothing of the cause:
//
//   - the primary stopped: requests (reads, writes, a new token), and /readyz
//     (503, primary down); after the primary is back, the API serves again
//     (PgBouncer retries the login after server_login_retry; the time is
//     logged);
//   - every PgBouncer server connection of the database busy (the pool and
//     the reserve pool): a request queued in PgBouncer gets 503 when its own
//     deadline passes (a request times out) and, on an instance whose
//     deadline is longer, when PgBouncer's query_wait_timeout drops it (the
//     pool wait bound); both within their bound, never sooner. Then the
//     API serves again.
//
// The two episodes overlap: the second runs on another database (its own
// PgBouncer pool) while the first waits for PgBouncer's login retry.
func TestUnavailableBehindPgBouncer(t *testing.T) {
	down := newService(t)
	a := down.instance(instanceOptions{requestTimeout: 2 * time.Second})
	u := a.CreateUser()
	a.Must(200, a.Do("GET", "/v1/conversations", u.Token, nil)) // u's token is now in a's auth cache
	loginRetry := pgbouncerSetting(t, down.stack, "server_login_retry")
	queueWait := pgbouncerSetting(t, down.stack, "query_wait_timeout")
	internals := []string{down.db.Name, strconv.Itoa(down.stack.State.PgBouncerPort), strconv.Itoa(down.stack.State.PrimaryPort)}

	down.stopComponent("primary")
	requests := []struct {
		what         string
		method, path string
		token        string
		body         any
	}{
		{"a write (new user)", "POST", "/v1/users", adminToken, map[string]string{"handle": "during_outage"}},
		{"a read (cached token)", "GET", "/v1/conversations", u.Token, nil},
		{"an unknown token", "GET", "/v1/me", "plt_not_cached", nil},
		{"a send", "POST", "/v1/conversations/1/messages", u.Token, map[string]string{"body": "x"}},
	}
	for _, rq := range requests {
		wantUnavailable(t, "primary stopped: "+rq.what, a.Do(rq.method, rq.path, rq.token, rq.body), internals...)
	}
	r := a.Do("GET", "/readyz", "", nil)
	var ready struct {
		Status     string `json:"status"`
		Components map[string]struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		} `json:"components"`
	}
	r.Decode(t, &ready)
	if r.Status != 503 || r.Header.Get("Retry-After") == "" || ready.Status != "unavailable" || ready.Components["primary"].Status != "down" {
		t.Errorf("/readyz with the primary stopped: %d %s (Retry-After %q)", r.Status, r.Body, r.Header.Get("Retry-After"))
	}
	for _, s := range internals {
		if strings.Contains(string(r.Body), s) {
			t.Errorf("/readyz shows %q: %s", s, r.Body)
		}
	}
	down.startComponents()

	// Recovery: PgBouncer logs in again server_login_retry after its last
	// failed login, so allow that and as long again.
	var wg sync.WaitGroup
	wg.Go(func() {
		took := stacktest.WaitFor(t, 2*loginRetry+10*time.Second, "/readyz 200 after the primary restarted", func() bool {
			return a.Do("GET", "/readyz", "", nil).Status == 200
		})
		r := a.Do("POST", "/v1/users", adminToken, map[string]string{"handle": "after_outage"})
		if r.Status != 201 {
			t.Errorf("after recovery: POST /v1/users %d %s", r.Status, r.Body)
		}
		a.Must(200, a.Do("GET", "/v1/conversations", u.Token, nil))
		t.Logf("primary restarted: the API served again after %v (PgBouncer server_login_retry %v)", took.Round(100*time.Millisecond), loginRetry)
	})
	defer wg.Wait()

	t.Run("PgBouncer pool busy", func(t *testing.T) {
		svc := newService(t)
		short := svc.instance(instanceOptions{requestTimeout: time.Second})
		// long's database budget (chatsvc.DefaultDBBudget, 1.5 s, less than
		// query_wait_timeout: PgBouncer's bound is the backstop) is raised
		// with its deadline, so that PgBouncer's bound is the one it meets.
		long := svc.instance(instanceOptions{requestTimeout: queueWait + 5*time.Second, dbBudget: queueWait + 5*time.Second})
		internals := []string{svc.db.Name, strconv.Itoa(svc.stack.State.PgBouncerPort)}
		// Hold every server connection PgBouncer gives this database: the
		// pool, and the reserve pool it adds after reserve_pool_timeout.
		hold := int(pgbouncerSetting(t, svc.stack, "default_pool_size")/time.Second + pgbouncerSetting(t, svc.stack, "reserve_pool_size")/time.Second)
		holders := make(chan error, hold)
		// A holder queued behind the instances' background queries (rollout
		// polls, the cache witness) can itself meet query_wait_timeout on a
		// busy machine: it queues again until it holds a server connection
		// (it ends when release cancels its sleep, 57014, or after 60 s).
		holdCtx, stopHolding := context.WithTimeout(context.Background(), 60*time.Second)
		defer stopHolding()
		for range hold {
			go func() {
				for {
					err := func() error {
						conn, err := pgx.Connect(holdCtx, svc.db.PgBouncerURL+"&default_query_exec_mode=exec")
						if err != nil {
							return err
						}
						defer conn.Close(context.Background())
						// The role's statement_timeout (1 s, migration 0070)
						// would end the sleep: a long job sets its own, in its
						// transaction (a session SET would leak to PgBouncer's
						// later clients).
						tx, err := conn.Begin(holdCtx)
						if err != nil {
							return err
						}
						defer tx.Rollback(context.Background())
						if _, err := tx.Exec(holdCtx, `SET LOCAL statement_timeout = 0`); err != nil {
							return err
						}
						_, err = tx.Exec(holdCtx, `SELECT pg_sleep(60)`)
						return err
					}()
					var pe *pgconn.PgError
					if holdCtx.Err() != nil || (errors.As(err, &pe) && pe.Code == "57014") || err == nil {
						holders <- err
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
		// Cancelled, not terminated: the server connections stay in the pool.
		release := func() {
			stacktest.Exec(t, svc.db.PrimaryURL, `SELECT pg_cancel_backend(pid) FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid() AND query = 'SELECT pg_sleep(60)'`)
		}
		defer release()
		stacktest.WaitFor(t, 15*time.Second, fmt.Sprintf("%d server connections in pg_sleep", hold), func() bool {
			conn, err := pgx.Connect(context.Background(), svc.db.PrimaryURL)
			if err != nil {
				return false
			}
			defer conn.Close(context.Background())
			var n int
			_ = conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND query = 'SELECT pg_sleep(60)' AND state = 'active'`).Scan(&n)
			return n == hold
		})

		// Both queued in PgBouncer at once: one instance's deadline ends its
		// wait, the other's is longer than query_wait_timeout.
		type timed struct {
			r    reply
			took time.Duration
		}
		results := make([]timed, 2)
		var wg sync.WaitGroup
		for i, c := range []*client{short, long} {
			wg.Go(func() {
				start := time.Now()
				r := c.Do("POST", "/v1/users", adminToken, map[string]string{"handle": fmt.Sprint("queued", i)})
				results[i] = timed{r, time.Since(start)}
			})
		}
		wg.Wait()
		wantUnavailable(t, "queued past the request deadline", results[0].r, internals...)
		wantUnavailable(t, "queued past query_wait_timeout", results[1].r, internals...)
		t.Logf("queued in PgBouncer: 503 after %v (request deadline %v) and after %v (query_wait_timeout %v, deadline %v)",
			results[0].took.Round(time.Millisecond), time.Second, results[1].took.Round(time.Millisecond), queueWait, queueWait+5*time.Second)
		if results[0].took < time.Second || results[0].took >= queueWait {
			t.Errorf("the request with a 1 s deadline got its 503 after %v", results[0].took)
		}
		if results[1].took < queueWait || results[1].took >= queueWait+5*time.Second {
			t.Errorf("the request with a %v deadline got its 503 after %v, not at PgBouncer's query_wait_timeout %v", queueWait+5*time.Second, results[1].took, queueWait)
		}
		if !strings.Contains(long.logs.String(), "query_wait_timeout") {
			t.Errorf("the instance's log does not say PgBouncer's query_wait_timeout ended the wait:\n%s", long.logs.String())
		}

		release()
		for range hold {
			<-holders
		}
		// The queries cancelled, the server connections are free again:
		// the instance with a deadline of the production order serves
		// again. (PgBouncer first works through what queued meanwhile —
		// the instances' rollout polls and, for every request that gave up,
		// a cancel request on a new server connection —, which on a busy
		// machine can keep the 1 s instance's requests timing out for a
		// while: not what is tested here.)
		took := stacktest.WaitFor(t, queueWait+10*time.Second, "a write once the pool is free", func() bool {
			return long.Do("POST", "/v1/users", adminToken, map[string]string{"handle": "after_pool"}).Status == 201
		})
		t.Logf("the instance serves again %v after the pool was freed", took.Round(100*time.Millisecond))
	})
}
