//go:build scale

package scale

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/dbrouter"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestReadsAcrossReplicas: two instances route reads over two replicas
// under a steady load of reads and sends. Healthy, both replicas serve
// (least reads in flight, ties rotating). Replay paused on replica 1: its
// breaker opens on both instances, its lag grows while replica 2's does
// not, and from then on replica 2 serves every replica read. Replica 2
// stopped (replica 1 back): replica 1 serves every replica read. Brought
// back, both serve again. Not one request fails in all of it.
func TestReadsAcrossReplicas(t *testing.T) {
	svc := newService(t)
	a, b := svc.instance(), svc.instance()
	ins := []*instance{a, b}
	writer := a.CreateUser()
	readers := []stacktest.User{a.CreateUser(), a.CreateUser(), a.CreateUser()}
	conv := a.CreateConversation(writer, "replicas", readers...)
	a.Send(conv.ID, writer, "hello")
	svc.rollout(false, true, a, b)

	// Load: a reader per instance and user (history, conversation list,
	// unread), and a writer sending through both instances.
	y := newTally()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	paths := []string{"/v1/conversations/" + conv.ID + "/messages?limit=20", "/v1/conversations", "/v1/unread"}
	for i, in := range ins {
		for j, u := range readers {
			wg.Go(func() {
				for k := 0; ctx.Err() == nil; k++ {
					r := in.Do("GET", paths[(i+j+k)%len(paths)], u.Token, nil)
					if r.Status != 200 {
						y.fail("read: HTTP %d %s", r.Status, r.Body)
						continue
					}
					y.source(r.Source())
				}
			})
		}
	}
	wg.Go(func() {
		for k := 0; ctx.Err() == nil; k++ {
			in := ins[k%2]
			r := in.Do("POST", "/v1/conversations/"+conv.ID+"/messages", writer.Token, map[string]string{"body": fmt.Sprint("w", k)})
			if r.Status != 201 {
				y.fail("send: HTTP %d %s", r.Status, r.Body)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	// status is one replica's view on every instance: breaker, state,
	// reads in flight.
	type view struct {
		breaker, state string
		inFlight       int64
		lagBytes       int64
	}
	status := func(name string) []view {
		var out []view
		for _, in := range ins {
			for _, st := range in.app.Router.Status() {
				if st.Name == name {
					out = append(out, view{st.Breaker, st.State, st.InFlight, st.LagBytes})
				}
			}
		}
		return out
	}
	// out waits until both instances keep replica name out of rotation
	// and no read is left running on it, so that its count is final.
	out := func(name string) time.Duration {
		return stacktest.WaitFor(t, 5*time.Second, name+" out of rotation on both instances", func() bool {
			for _, v := range status(name) {
				if v.breaker != "open" || v.inFlight != 0 {
					return false
				}
			}
			return true
		})
	}
	in := func(name string) {
		stacktest.WaitFor(t, 15*time.Second, name+" back in rotation on both instances", func() bool {
			for _, v := range status(name) {
				if v.breaker != "closed" {
					return false
				}
			}
			return true
		})
	}
	// window runs the load for d and returns each replica's reads in it.
	window := func(d time.Duration) map[string]int64 {
		before := replicaReads(a, b)
		time.Sleep(d)
		after := replicaReads(a, b)
		delta := map[string]int64{}
		for k, v := range after {
			delta[k] = v - before[k]
		}
		return delta
	}
	stacktest.WaitFor(t, 5*time.Second, "the load running", func() bool { return y.reads() > 50 })

	// Healthy: both replicas serve.
	healthy := window(2 * time.Second)
	total := healthy["replica1"] + healthy["replica2"]
	t.Logf("healthy: replica reads %v", healthy)
	if total == 0 || healthy["replica1"]*5 < total || healthy["replica2"]*5 < total {
		t.Errorf("healthy: replica reads %v: want both replicas serving (each at least a fifth)", healthy)
	}

	// Replay paused on replica 1.
	stacktest.PauseReplay(t, svc.db.ReplicaURLs[0])
	took := out("replica1")
	for _, v := range status("replica2") {
		if v.breaker != "closed" {
			t.Errorf("replica2 %+v while only replica1 is paused", v)
		}
	}
	paused := window(2 * time.Second)
	r1, r2 := status("replica1"), status("replica2")
	t.Logf("replica1 paused: out of rotation after %v; replica reads in the next 2 s %v; replica1 %+v, replica2 %+v", took.Round(time.Millisecond), paused, r1[0], r2[0])
	if paused["replica1"] != 0 || paused["replica2"] == 0 {
		t.Errorf("replica1 paused: replica reads %v, want all on replica2", paused)
	}
	if r1[0].state != "paused" || r1[0].lagBytes == 0 || r2[0].state != "healthy" {
		t.Errorf("each replica's own state and lag: replica1 %+v, replica2 %+v", r1[0], r2[0])
	}
	stacktest.ResumeReplay(t, svc.db.ReplicaURLs[0])
	in("replica1")

	// Replica 2 stopped.
	svc.restartInCleanup()
	if err := svc.stack.StopComponent(context.Background(), "replica2"); err != nil {
		t.Fatal(err)
	}
	took = out("replica2")
	stopped := window(2 * time.Second)
	t.Logf("replica2 stopped: out of rotation after %v; replica reads in the next 2 s %v", took.Round(time.Millisecond), stopped)
	if stopped["replica2"] != 0 || stopped["replica1"] == 0 {
		t.Errorf("replica2 stopped: replica reads %v, want all on replica1", stopped)
	}

	// Back: both serve again.
	upCtx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := svc.upAgain(upCtx); err != nil {
		t.Fatal(err)
	}
	in("replica2")
	back := window(2 * time.Second)
	t.Logf("replica2 back: replica reads %v", back)
	if back["replica1"] == 0 || back["replica2"] == 0 {
		t.Errorf("replica2 back: replica reads %v, want both serving", back)
	}

	stop()
	wg.Wait()
	bySource, errs, _ := y.snapshot()
	t.Logf("requests by X-Read-Source over the test: %v; failed: %d", bySource, len(errs))
	if len(errs) > 0 {
		t.Fatalf("%d requests failed (none may), e.g. %s", len(errs), errs[0])
	}
}

// TestReadsAvoidTheBusyReplica: the router balances by reads in flight, not
// blindly in turn. A router on both replicas of the stack; every read that
// lands on replica 1 takes 200 ms (pg_sleep on it), one on replica 2 a
// round trip. Eight readers for two seconds: a round robin would send half
// the reads to the slow replica; least reads in flight sends it about one
// at a time, so replica 2 serves the great majority — and the slow one still
// serves (a healthy replica is not starved).
func TestReadsAvoidTheBusyReplica(t *testing.T) {
	svc := newService(t)
	ctx := context.Background()
	r, err := dbrouter.New(ctx, dbrouter.Config{
		PrimaryURL: svc.db.PgBouncerURL, PrimaryExecMode: "exec", ReplicaURLs: svc.db.ReplicaURLs,
		PoolMaxConns: 4, ReplicaPoolMaxConns: 10, ReplicaReadTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	slowPort := func() int {
		u, err := url.Parse(svc.db.ReplicaURLs[0])
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(u.Port())
		return p
	}()
	var fast, slow, failed atomic.Int64
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				var port int
				target, err := r.Read(ctx, "message_history", dbrouter.Route{ReplicaAllowed: true}, func(ctx context.Context, q postgres.Querier) error {
					if err := q.QueryRow(ctx, `SELECT inet_server_port()`).Scan(&port); err != nil {
						return err
					}
					if port == slowPort {
						_, err := q.Exec(ctx, `SELECT pg_sleep(0.2)`)
						return err
					}
					return nil
				})
				switch {
				case err != nil || target != dbrouter.TargetReplica:
					failed.Add(1)
				case port == slowPort:
					slow.Add(1)
				default:
					fast.Add(1)
				}
			}
		})
	}
	wg.Wait()
	total := fast.Load() + slow.Load()
	t.Logf("8 readers for 2 s: replica2 (fast) %d reads, replica1 (200 ms each) %d, not from a replica or failed %d", fast.Load(), slow.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d reads failed or left the replicas", failed.Load())
	}
	if slow.Load() == 0 || total == 0 || slow.Load()*10 > total {
		t.Errorf("the slow replica served %d of %d reads: want some, and at most a tenth (round robin would give it half)", slow.Load(), total)
	}
}
