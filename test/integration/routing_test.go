package integration

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestReadsFollowRollout: reads go to the replica when the endpoint's
// rollout has the replica on, to the primary with X-Consistency: strong or
// for a user outside the rollout's percentage, and a change made through
// PUT /admin/rollouts on one instance is applied by both within 2 s.
func TestReadsFollowRollout(t *testing.T) {
	svc := newService(t)
	a, b := svc.instance(), svc.instance()
	writer, reader := a.CreateUser(), a.CreateUser()
	conv := a.CreateConversation(writer, "routing", reader)
	a.Send(conv.ID, writer, "hello")
	path := "/v1/conversations/" + conv.ID + "/messages"
	source := func(c *client, header ...string) string {
		r := c.Must(200, c.Do("GET", path, reader.Token, nil, header...))
		return r.Source()
	}

	// Baseline (0 %): the primary, cohort baseline.
	for _, c := range []*client{a, b} {
		if src := source(c); src != "primary" {
			t.Fatalf("baseline read from %q", src)
		}
	}
	svc.optimize(a, false, true)
	for _, c := range []*client{a, b} {
		stacktest.WaitFor(t, 2*time.Second, "a replica read", func() bool { return source(c) == "replica" })
		if src := source(c, "X-Consistency", "strong"); src != "primary" {
			t.Fatalf("strong read from %q", src)
		}
	}
	if n := counterMetric(t, a.reg, "parley_http_requests_total", map[string]string{"cohort": "optimized", "route": "GET /v1/conversations/{id}/messages"}); n == 0 {
		t.Fatalf("no request counted in the optimized cohort")
	}
	if n := counterMetric(t, a.reg, "parley_db_reads_total", map[string]string{"endpoint": "message_history", "target": "primary", "reason": "strong"}); n == 0 {
		t.Fatalf("the strong read is not counted with reason strong")
	}

	// Runtime toggles through one instance's admin API, no help: both
	// instances follow within 2 s.
	for _, tc := range []struct {
		replica bool
		want    string
	}{{false, "primary"}, {true, "replica"}} {
		a.Must(200, a.Do("PUT", "/admin/rollouts/message_history", adminToken, rolloutUpdate{Replica: ptr(tc.replica)}))
		changed := time.Now()
		var wg sync.WaitGroup
		took := make([]time.Duration, 2)
		for i, c := range []*client{a, b} {
			wg.Go(func() {
				for source(c) != tc.want {
					if time.Since(changed) > 2*time.Second {
						t.Errorf("instance %d still reads from the other node 2 s after replica=%v", i, tc.replica)
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
				took[i] = time.Since(changed)
			})
		}
		wg.Wait()
		t.Logf("replica=%v applied by both instances after %v and %v", tc.replica, took[0].Round(time.Millisecond), took[1].Round(time.Millisecond))
	}

	// 0 %: everyone back on the baseline path.
	a.Must(200, a.Do("PUT", "/admin/rollouts/message_history", adminToken, rolloutUpdate{Percent: ptr(0)}))
	stacktest.WaitFor(t, 2*time.Second, "percent 0 on instance b", func() bool { return source(b) == "primary" })
}

// TestReadYourWrites: a user's read right after their own write, on the
// other instance, shows the write. With the replica behind by a second and
// a half yet serving (lagReplica), 100 times in a row: the writer's read is
// fresh while the other user's read of the same page, from the replica, is
// not — so the replica was in use and only the writer's token kept the
// writer off it. Then the token carried only in X-Consistency-Token,
// honoured for another reader; with Redis down the reading instance cannot
// know the writer's position and reads from the primary, header or not. Then with replay running normally,
// where the replica serves the others while the writer's reads wait for
// their token.
func TestReadYourWrites(t *testing.T) {
	svc := newService(t)
	// A patient cache: the test counts each read held back by the writer's
	// token, and a Redis round trip over the production 30 ms on a busy
	// machine (more likely through a cluster client) would make the
	// writer's position unknown instead — still read from the primary,
	// but counted as token_unknown (seen: 99 of 100).
	a, b := svc.instance(instanceOptions{patientCache: true}), svc.instance(instanceOptions{patientCache: true})
	writer, other := a.CreateUser(), a.CreateUser()
	conv := a.CreateConversation(writer, "ryw", other)
	a.Send(conv.ID, writer, "start")
	svc.optimize(a, false, true)
	newestIn := func(c *client, convID string, u user, header ...string) (string, string) {
		r := c.Must(200, c.Do("GET", "/v1/conversations/"+convID+"/messages?limit=1", u.Token, nil, header...))
		var p messagePage
		r.Decode(t, &p)
		if len(p.Messages) == 0 {
			return "", r.Source()
		}
		return p.Messages[0].ID, r.Source()
	}
	newest := func(c *client, u user, header ...string) (string, string) { return newestIn(c, conv.ID, u, header...) }
	stacktest.WaitFor(t, 2*time.Second, "the replica serving the other user", func() bool { _, src := newest(b, other); return src == "replica" })
	sendThrough := func(c *client, convID string, from user, body string) (message, string) {
		t.Helper()
		r := c.Must(201, c.Do("POST", "/v1/conversations/"+convID+"/messages", from.Token, map[string]string{"body": body}))
		var m message
		r.Decode(t, &m)
		token := r.Header.Get("X-Consistency-Token")
		if token == "" {
			t.Fatalf("a write without X-Consistency-Token")
		}
		return m, token
	}
	tokenAhead := func() float64 {
		return counterMetric(t, b.reg, "parley_db_reads_total", map[string]string{"endpoint": "message_history", "reason": "token_ahead"}) +
			counterMetric(t, a.reg, "parley_db_reads_total", map[string]string{"endpoint": "message_history", "reason": "token_ahead"})
	}

	// checked counts the reads held to a token the replica's last probe had
	// not replayed, checked on the replica in their own round trip (served
	// there if it had replayed the token by then, else by the primary).
	checked := func() float64 {
		return counterMetric(t, b.reg, "parley_db_replica_position_checks_total", map[string]string{"endpoint": "message_history"}) +
			counterMetric(t, a.reg, "parley_db_replica_position_checks_total", map[string]string{"endpoint": "message_history"})
	}

	t.Run("lagging replica", func(t *testing.T) {
		svc.lagReplica(t)
		before := tokenAhead()
		const n = 100
		for i := range n {
			w, rd := []*client{a, b}[i%2], []*client{b, a}[i%2]
			m, _ := sendThrough(w, conv.ID, writer, fmt.Sprint("lagging ", i))
			if id, src := newest(rd, writer); id != m.ID {
				t.Fatalf("write %d: the writer's next read (from %s) shows %s, not their message %s", i, src, id, m.ID)
			}
			if id, src := newest(rd, other); src != "replica" || id == m.ID {
				t.Fatalf("write %d: the other user's read shows %s from %s; want the replica, behind the write", i, id, src)
			}
		}
		if held := tokenAhead() - before; held < n {
			t.Fatalf("%v of %d reads held on the primary by the writer's token", held, n)
		}
		t.Logf("replica behind by %v: %d of %d writer's reads showed the write, each held on the primary by the token; the other user's read of the same page each time from the replica, stale", replicaDelay, n, n)

		// The token in the header decides on its own: a write through a
		// read on b, which knows nothing else of it — without the header
		// from the replica, stale (so the header is what makes the
		// difference), with it from the primary, showing it.
		headerDecides := func(t *testing.T, convID string, reader user, m message, token string) {
			t.Helper()
			if id, src := newestIn(b, convID, reader); src != "replica" || id == m.ID {
				t.Fatalf("without the header: newest %q from %s; want the replica, which has not replayed %s", id, src, m.ID)
			}
			if id, src := newestIn(b, convID, reader, "X-Consistency-Token", token); src != "primary" || id != m.ID {
				t.Fatalf("with X-Consistency-Token %s: newest %q from %s; want %s from the primary", token, id, src, m.ID)
			}
		}
		t.Run("token in the header, another reader", func(t *testing.T) {
			// other never wrote, so has no token of their own: the writer's,
			// passed on, makes other's read show the writer's message.
			m, token := sendThrough(a, conv.ID, writer, "for other")
			headerDecides(t, conv.ID, other, m, token)
		})
		t.Run("token in the header, Redis down", func(t *testing.T) {
			// A member who never wrote before writes through a while Redis,
			// which would tell b of the write, is down: b cannot ask Redis
			// for the writer's position, so it cannot know the replicas
			// have it — the read goes to the primary (token_unknown) with
			// or without the header, and shows the write.
			fresh := a.CreateUser()
			conv2 := a.CreateConversation(writer, "header", fresh)
			stacktest.WaitFor(t, 10*time.Second, "the new conversation on the replica", func() bool {
				r := b.Do("GET", "/v1/conversations/"+conv2.ID+"/messages", fresh.Token, nil)
				return r.Status == 200 && r.Source() == "replica"
			})
			svc.stopComponent("redis")
			m, token := sendThrough(a, conv2.ID, fresh, "through a")
			for _, header := range [][]string{nil, {"X-Consistency-Token", token}} {
				if id, src := newestIn(b, conv2.ID, fresh, header...); src != "primary" || id != m.ID {
					t.Errorf("Redis down, header %v: newest %q from %s; want %s from the primary", header != nil, id, src, m.ID)
				}
			}
			svc.startComponents()
		})
	})

	t.Run("replay running", func(t *testing.T) {
		stacktest.WaitFor(t, 10*time.Second, "Redis in use and the replica serving the other user", func() bool {
			_, src := newest(b, other)
			return a.cache.Up() && b.cache.Up() && src == "replica"
		})
		before, checkedBefore := tokenAhead(), checked()
		sources := map[string]int{}
		for i := range 100 {
			w, rd := []*client{a, b}[i%2], []*client{b, a}[i%2]
			m, _ := sendThrough(w, conv.ID, writer, fmt.Sprint("running ", i))
			id, src := newest(rd, writer)
			if id != m.ID {
				t.Fatalf("write %d: the writer's next read (from %s) shows %s, not their message %s", i, src, id, m.ID)
			}
			sources[src]++
		}
		after, checkedAfter := tokenAhead(), checked()
		var others int
		for range 20 {
			if _, src := newest(b, other); src == "replica" {
				others++
			}
		}
		t.Logf("replay running: 100 of 100 reads showed the write (sources %v; %v held to the token by a position check on the replica, %v of them then served by the primary); the other user: %d of 20 reads on the replica",
			sources, checkedAfter-checkedBefore, after-before, others)
		if after == before && checkedAfter == checkedBefore {
			t.Fatalf("no read was held back by a token: the test did not exercise read-your-writes")
		}
	})
}

// TestReplicaLagOpensBreaker: pause replay (on every replica) while users
// keep writing and reading: the replicas' breakers open within 2 s (as
// /admin/status shows) and no request fails; after resuming, they close and
// the replicas serve reads again.
func TestReplicaLagOpensBreaker(t *testing.T) {
	svc := newService(t)
	a := svc.instance()
	writer, reader := a.CreateUser(), a.CreateUser()
	conv := a.CreateConversation(writer, "lag", reader)
	a.Send(conv.ID, writer, "start")
	svc.optimize(a, false, true)
	path := "/v1/conversations/" + conv.ID + "/messages?limit=5"
	replicaRead := func() bool { return a.Must(200, a.Do("GET", path, reader.Token, nil)).Source() == "replica" }
	stacktest.WaitFor(t, 2*time.Second, "a replica read", replicaRead)

	var failed, done atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	load := func(f func() reply, want int) {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if r := f(); r.Status != want {
				failed.Add(1)
				t.Errorf("HTTP %d during the lag: %s", r.Status, r.Body)
			}
			done.Add(1)
		}
	}
	wg.Go(func() {
		i := 0
		load(func() reply {
			i++
			return a.Do("POST", "/v1/conversations/"+conv.ID+"/messages", writer.Token, map[string]string{"body": fmt.Sprint("w", i)})
		}, 201)
	})
	for _, u := range []user{reader, reader, writer} {
		wg.Go(func() { load(func() reply { return a.Do("GET", path, u.Token, nil) }, 200) })
	}

	if b := a.breakers(); b != svc.allBreakers("closed") {
		t.Fatalf("breakers %s before the pause", b)
	}
	svc.pauseReplay(t)
	paused := time.Now()
	took := stacktest.WaitFor(t, 2*time.Second, "the breakers to open", func() bool { return a.breakers() == svc.allBreakers("open") })
	st := a.status().Replicas[0]
	t.Logf("replay paused under load: breakers open after %v (%s: state %s, lag %d bytes, %.3f s)", took.Round(time.Millisecond), st.Name, st.State, st.LagBytes, st.LagSeconds)
	time.Sleep(time.Second) // keep the load on with the replicas out
	svc.resumeReplay(t)
	closed := stacktest.WaitFor(t, 10*time.Second, "the breakers to close", func() bool { return a.breakers() == svc.allBreakers("closed") })
	stacktest.WaitFor(t, 2*time.Second, "replica reads again", replicaRead)
	close(stop)
	wg.Wait()
	t.Logf("resumed: breakers closed after %v; %d requests during the episode (%.1f s), %d failed", closed.Round(time.Millisecond), done.Load(), time.Since(paused).Seconds(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed while the replica lagged", failed.Load())
	}
}

// TestReplicaStoppedFallsBack: with the replicas stopped, every read meant
// for them succeeds through the primary.
func TestReplicaStoppedFallsBack(t *testing.T) {
	svc := newService(t)
	a := svc.instance()
	u, v := a.CreateUser(), a.CreateUser()
	conv := a.CreateConversation(u, "fallback", v)
	a.Send(conv.ID, u, "hi")
	svc.optimize(a, false, true)
	paths := []string{"/v1/conversations/" + conv.ID + "/messages", "/v1/conversations", "/v1/unread", "/v1/conversations/" + conv.ID}
	stacktest.WaitFor(t, 2*time.Second, "a replica read", func() bool {
		return a.Must(200, a.Do("GET", paths[0], v.Token, nil)).Source() == "replica"
	})

	svc.stopComponent("replicas")
	var ok, failed atomic.Int64
	sources := sync.Map{}
	var wg sync.WaitGroup
	deadline := time.Now().Add(1500 * time.Millisecond)
	for g := range 4 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				r := a.Do("GET", paths[(g+i)%len(paths)], v.Token, nil)
				if r.Status != 200 {
					failed.Add(1)
					t.Errorf("read with the replica stopped: %d %s", r.Status, r.Body)
					continue
				}
				ok.Add(1)
				n, _ := sources.LoadOrStore(r.Source(), new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		})
	}
	wg.Wait()
	bySource := map[string]int64{}
	sources.Range(func(k, v any) bool { bySource[k.(string)] = v.(*atomic.Int64).Load(); return true })
	t.Logf("replicas stopped: %d of %d reads succeeded, by source %v; replica states %+v", ok.Load(), ok.Load()+failed.Load(), bySource, a.status().Replicas)
	if failed.Load() != 0 || ok.Load() == 0 || bySource["replica"] != 0 {
		t.Fatalf("%d reads failed, %d succeeded, %d from the replica", failed.Load(), ok.Load(), bySource["replica"])
	}
}
