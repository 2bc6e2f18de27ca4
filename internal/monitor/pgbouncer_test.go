package monitor

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parley-chat/parley/internal/stack"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

func findDB(dbs []PgBouncerDatabase, name string) (PgBouncerDatabase, bool) {
	for _, d := range dbs {
		if d.Database == name {
			return d, true
		}
	}
	return PgBouncerDatabase{}, false
}

// More concurrent transactions than PgBouncer's pool size (10 in tests)
// and its reserve pool (5 after a client waited 1 s, as deploy/pgbouncer.ini
// sets it): the pool is saturated and clients queue.
func TestPgBouncerSaturation(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	s := stacktest.ForTest(t)
	db := s.NewDatabase(t)
	pool := newPool(t, db.PgBouncerURL, true, nil)
	reg := prometheus.NewRegistry()
	mon, err := NewPgBouncer(PgBouncerOptions{AdminURL: s.PgBouncerAdminURL(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	if _, err := pool.Exec(ctx, `SELECT 1`); err != nil { // creates the database's pool in PgBouncer
		t.Fatal(err)
	}
	dbs, err := mon.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := findDB(dbs, "pgbouncer"); ok {
		t.Error("the admin pseudo-database is exported")
	}
	idle, ok := findDB(dbs, db.Name)
	if !ok || idle.PoolSize != 10 || idle.PoolMode != "transaction" {
		t.Fatalf("test database before load: %+v (found %v) in %+v", idle, ok, dbs)
	}
	if idle.Saturation != 0 || idle.ClientsWaiting != 0 {
		t.Errorf("idle pool: %+v", idle)
	}

	const clients, reserve = 16, 5
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := pool.Exec(ctx, `SELECT pg_sleep(2)`); err != nil {
				errs <- err
			}
		}()
	}
	var busy PgBouncerDatabase
	eventually(t, 10*time.Second, "saturated pool with waiting clients", func() bool {
		dbs, err := mon.Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		busy, _ = findDB(dbs, db.Name)
		return busy.Saturation >= 1 && busy.ClientsWaiting > 0 && busy.QueueWaitSeconds > 0
	})
	t.Logf("under load: %+v", busy)
	// The pool, and the reserve once a client waited 1 s: 10 or up to 15
	// servers for 16 clients, the rest waiting.
	if a := busy.ServersActive; a < 10 || a > 10+reserve || busy.ClientsActive+busy.ClientsWaiting != clients || busy.Saturation != a/10 {
		t.Errorf("16 clients on a pool of 10 (+%d reserve): %+v", reserve, busy)
	}
	labels := map[string]string{"database": db.Name}
	if v := stacktest.MustMetric(t, reg, "parley_pgbouncer_pool_saturation_ratio", labels); v != busy.Saturation {
		t.Errorf("saturation gauge = %v, the poll says %v", v, busy.Saturation)
	}
	if v := stacktest.MustMetric(t, reg, "parley_pgbouncer_clients", map[string]string{"database": db.Name, "state": "waiting"}); v != busy.ClientsWaiting {
		t.Errorf("waiting clients gauge = %v, the poll says %v", v, busy.ClientsWaiting)
	}
	if v := stacktest.MustMetric(t, reg, "parley_pgbouncer_servers", map[string]string{"database": db.Name, "state": "active"}); v != busy.ServersActive {
		t.Errorf("active servers gauge = %v, the poll says %v", v, busy.ServersActive)
	}
	if v := stacktest.MustMetric(t, reg, "parley_pgbouncer_queue_wait_seconds", labels); v <= 0 || v > 10 {
		t.Errorf("queue wait gauge = %v", v)
	}
	if v := stacktest.MustMetric(t, reg, "parley_pgbouncer_up", map[string]string{}); v != 1 {
		t.Errorf("up = %v", v)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("client: %v", err)
	}

	// Rates come from the counters' movement between two polls.
	if _, err := mon.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := pool.Exec(ctx, `SELECT 1`); err != nil {
			t.Fatal(err)
		}
	}
	dbs, err = mon.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := findDB(dbs, db.Name)
	if after.TransactionsPerSecond <= 0 || after.QueriesPerSecond <= 0 || after.ClientsWaiting != 0 || after.Saturation != 0 {
		t.Errorf("after load: %+v", after)
	}
	if v := stacktest.MustMetric(t, reg, "parley_pgbouncer_transactions_per_second", labels); v <= 0 {
		t.Errorf("TPS gauge = %v", v)
	}
	sum := mon.Summary()
	if !sum.Up || sum.LastSuccess == nil {
		t.Errorf("summary: %+v", sum)
	}
}

// With PgBouncer stopped the monitor reports parley_pgbouncer_up 0, keeps
// running, and recovers when PgBouncer is back.
func TestPgBouncerDown(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	s := stacktest.ForTest(t)
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	mon, err := NewPgBouncer(PgBouncerOptions{AdminURL: s.PgBouncerAdminURL(), Registerer: reg,
		Logger: logs.logger(), Interval: 100 * time.Millisecond, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mon.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	upIs := func(v string) error {
		return testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP parley_pgbouncer_up 1 when the PgBouncer admin console answered the latest poll, else 0.
# TYPE parley_pgbouncer_up gauge
parley_pgbouncer_up `+v+"\n"), "parley_pgbouncer_up")
	}
	if err := upIs("1"); err != nil {
		t.Fatal(err)
	}

	restarted := false
	restart := func() {
		if restarted {
			return
		}
		restarted = true
		if _, err := stack.Up(context.Background(), stack.Config{DataDir: s.Dir}); err != nil {
			t.Errorf("restart the stack: %v", err)
		}
	}
	t.Cleanup(restart) // other tests share the stack
	if err := s.StopComponent(ctx, "pgbouncer"); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mon.Run(runCtx) }()
	eventually(t, 5*time.Second, "up = 0", func() bool { return upIs("0") == nil })
	if n := testutil.CollectAndCount(reg, "parley_pgbouncer_pool_saturation_ratio"); n != 0 {
		t.Errorf("%d saturation series while PgBouncer is down", n)
	}
	time.Sleep(500 * time.Millisecond) // several failing polls
	if mon.Up() || mon.Summary().LastError == "" {
		t.Errorf("summary while down: %+v", mon.Summary())
	}
	// Several failed polls, one line per distinct error: the broken
	// connection, then the refused reconnects.
	if n := strings.Count(logs.String(), "monitor failed"); n < 1 || n > 2 {
		t.Errorf("%d failure lines, want 1 or 2:\n%s", n, logs)
	}

	restart()
	eventually(t, 10*time.Second, "up = 1 after restart", func() bool { return upIs("1") == nil })
	if !strings.Contains(logs.String(), "monitor recovered") {
		t.Errorf("recovery not logged:\n%s", logs)
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v", err)
	}
}
