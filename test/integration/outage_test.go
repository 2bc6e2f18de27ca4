package integration

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/rollout"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestRedisOutage: with Redis stopped, 100 concurrent requests all succeed
// from the database, before and after the cache's breaker opens; once it is
// open, a request of the cached cohort costs Redis nothing — every one is a
// bypass and no Redis operation is attempted (counted) — and its latency is
// logged next to the no-cache baseline measured side by side (a user of each
// cohort at 50 %, requests interleaved: a figure for this machine); writes
// succeed; when Redis is back the cache serves again.
func TestRedisOutage(t *testing.T) {
	svc := newService(t)
	a := svc.instance()
	owner := a.CreateUser()
	// One user in each cohort of the history rollout at 50 %.
	var cached, baseline user
	var members []user
	for cached.ID == "" || baseline.ID == "" {
		u := a.CreateUser()
		members = append(members, u)
		id, _ := strconv.ParseInt(u.ID, 10, 64)
		if rollout.InRollout(chat.EndpointMessageHistory, id, 50) {
			cached = u
		} else {
			baseline = u
		}
	}
	conv := a.CreateConversation(owner, "outage", members...)
	for i := range 60 {
		a.Send(conv.ID, owner, fmt.Sprint("history ", i))
	}
	svc.caughtUp()
	svc.setRollout(a, chat.EndpointMessageHistory, rolloutUpdate{Percent: ptr(50), Cache: ptr(true), Replica: ptr(false)})
	path := "/v1/conversations/" + conv.ID + "/messages?limit=20"
	a.Must(200, a.Do("GET", path, cached.Token, nil))
	if src := a.Must(200, a.Do("GET", path, cached.Token, nil)).Source(); src != "cache" {
		t.Fatalf("before the outage: read from %q, want cache", src)
	}

	// burst sends n concurrent reads alternating between the two users and
	// returns each user's latencies and the sources.
	burst := func(n int) (lat map[string][]time.Duration, sources map[string]int) {
		lat, sources = map[string][]time.Duration{}, map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for i := range n {
			u := []user{cached, baseline}[i%2]
			wg.Go(func() {
				<-gate
				start := time.Now()
				r := a.Do("GET", path, u.Token, nil)
				d := time.Since(start)
				if r.Status != 200 {
					t.Errorf("read during the Redis outage: %d %s", r.Status, r.Body)
					return
				}
				mu.Lock()
				lat[u.ID] = append(lat[u.ID], d)
				sources[r.Source()]++
				mu.Unlock()
			})
		}
		close(gate)
		wg.Wait()
		return lat, sources
	}

	svc.stopComponent("redis")
	// Right away, before the breaker has opened.
	_, sources := burst(100)
	if t.Failed() || sources["cache"] != 0 || sources["primary"] != 100 {
		t.Fatalf("100 concurrent reads with Redis just stopped: sources %v", sources)
	}
	stacktest.WaitFor(t, 2*time.Second, "the cache breaker to open", func() bool { return a.status().Cache.State == "down" })

	// Breaker open: the latency of the cached cohort against the no-cache
	// baseline, interleaved request by request at a concurrency low enough
	// that latency is service time, not queueing (at 100 in flight on a
	// pool of 10 the p95 is queueing, a few ms of noise either way).
	if _, sources := burst(100); sources["primary"] != 100 {
		t.Fatalf("reads with the breaker open: sources %v", sources)
	}
	bypasses := func() float64 {
		return counterMetric(t, a.reg, "parley_cache_requests_total", map[string]string{"endpoint": chat.EndpointMessageHistory, "result": "bypass"})
	}
	// The breaker's own probe — a refresh of the cache epoch every
	// ProbeInterval (200 ms: a fifth of the 1 s epoch), in the background — is the only Redis
	// operation an instance makes while the breaker is open; requests make
	// none.
	bypassesBefore := bypasses()
	opsBefore, probeStart := a.cacheErrorsByOp(t), time.Now()
	var withOutage, withoutCache []time.Duration
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for i := range 400 {
				u := []user{cached, baseline}[i%2]
				start := time.Now()
				r := a.Do("GET", path, u.Token, nil)
				d := time.Since(start)
				if r.Status != 200 || r.Source() != "primary" {
					t.Errorf("read with the breaker open: %d from %q", r.Status, r.Source())
					return
				}
				mu.Lock()
				if u == cached {
					withOutage = append(withOutage, d)
				} else {
					withoutCache = append(withoutCache, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	p95o, p95b := percentile(withOutage, 95), percentile(withoutCache, 95)
	p50o, p50b := percentile(withOutage, 50), percentile(withoutCache, 50)
	added := p95o - p95b
	t.Logf("Redis down, breaker open, 2 clients x 400 interleaved reads: cached cohort p50 %v p95 %v; no-cache baseline p50 %v p95 %v; p95 added by the outage %v (this machine)",
		p50o.Round(time.Microsecond), p95o.Round(time.Microsecond), p50b.Round(time.Microsecond), p95b.Round(time.Microsecond), added.Round(time.Microsecond))
	if n, want := bypasses()-bypassesBefore, float64(len(withOutage)); n != want {
		t.Errorf("%v of the cached cohort's %v reads bypassed the cache with the breaker open", n, want)
	}
	opsAfter := a.cacheErrorsByOp(t)
	probes := opsAfter["epoch"] - opsBefore["epoch"]
	for op, n := range opsAfter {
		if d := n - opsBefore[op]; op != "epoch" && d != 0 {
			t.Errorf("%v Redis %s operations attempted (and failed) by requests with the breaker open, want none", d, op)
		}
	}
	if elapsed := time.Since(probeStart); probes > float64(elapsed/(200*time.Millisecond))+1 {
		t.Errorf("%v epoch refreshes failed in %v with the breaker open: more than the probe's one per 200 ms", probes, elapsed.Round(time.Millisecond))
	}

	// Writes go on; the write is visible once Redis is back.
	m := a.Send(conv.ID, owner, "during the outage")
	svc.startComponents()
	stacktest.WaitFor(t, 10*time.Second, "the cache to serve again", func() bool {
		r := a.Must(200, a.Do("GET", path, cached.Token, nil))
		var p messagePage
		r.Decode(t, &p)
		if len(p.Messages) == 0 || p.Messages[0].ID != m.ID {
			t.Fatalf("after the outage the newest message is not the one sent during it: %+v", p.Messages)
		}
		return r.Source() == "cache"
	})
}
