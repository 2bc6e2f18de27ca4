package integration

import (
	"bytes"
	"fmt"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestCacheServesAndInvalidates: with the cache rolled out, a repeated read
// is a hit (X-Read-Source: cache) with the same body as the database's; a
// page is shared by the members and refused to anyone else, on any
// instance; a write is visible on the next read on every instance.
func TestCacheServesAndInvalidates(t *testing.T) {
	svc := newService(t)
	a, b := svc.instance(instanceOptions{patientCache: true}), svc.instance(instanceOptions{patientCache: true})
	alice, bob, carol, eve := a.CreateUser(), a.CreateUser(), a.CreateUser(), a.CreateUser()
	group := a.CreateConversation(alice, "group", bob, carol)
	for i := range 5 {
		a.Send(group.ID, []user{alice, bob, carol}[i%3], fmt.Sprint("m", i))
	}
	svc.optimize(a, true, false)
	path := "/v1/conversations/" + group.ID + "/messages?limit=2"

	first := a.Must(200, a.Do("GET", path, bob.Token, nil))
	if first.Source() == "cache" {
		t.Fatalf("first read came from the cache")
	}
	for _, c := range []*client{a, b} {
		for _, u := range []user{bob, carol, alice} {
			r := c.Must(200, c.Do("GET", path, u.Token, nil))
			if r.Source() != "cache" || !bytes.Equal(r.Body, first.Body) {
				t.Fatalf("repeat read by %s: source %q, body %s (first %s)", u.Handle, r.Source(), r.Body, first.Body)
			}
		}
		// Not a member: 404, never the cached page.
		if r := c.Do("GET", path, eve.Token, nil); r.Status != 404 || r.Code(t) != "not_found" || bytes.Contains(r.Body, []byte("m4")) {
			t.Fatalf("non-member on a cached page: %d %s", r.Status, r.Body)
		}
	}
	// The strong read bypasses the cache; the body is the same.
	if r := b.Must(200, b.Do("GET", path, bob.Token, nil, "X-Consistency", "strong")); r.Source() != "primary" || !bytes.Equal(r.Body, first.Body) {
		t.Fatalf("strong read: %q %s", r.Source(), r.Body)
	}
	// An older page, by cursor, cached under its own key.
	var p messagePage
	first.Decode(t, &p)
	older := "/v1/conversations/" + group.ID + "/messages?limit=2&before=" + url.QueryEscape(*p.NextCursor)
	o1 := b.Must(200, b.Do("GET", older, carol.Token, nil))
	o2 := a.Must(200, a.Do("GET", older, bob.Token, nil))
	if o2.Source() != "cache" || !bytes.Equal(o1.Body, o2.Body) || bytes.Equal(o1.Body, first.Body) {
		t.Fatalf("older page: %q\n%s\n%s", o2.Source(), o1.Body, o2.Body)
	}

	// A send through b: the next read through a (cached before) has it.
	m := b.Send(group.ID, carol, "fresh")
	r := a.Must(200, a.Do("GET", path, bob.Token, nil))
	var q messagePage
	r.Decode(t, &q)
	if r.Source() == "cache" || len(q.Messages) == 0 || q.Messages[0].ID != m.ID {
		t.Fatalf("after a send: source %q, page %+v", r.Source(), q)
	}
	// Every other read endpoint of bob is cached and invalidated too.
	for _, ep := range []string{"/v1/conversations", "/v1/conversations/" + group.ID, "/v1/unread"} {
		a.Must(200, a.Do("GET", ep, bob.Token, nil))
		if r := b.Must(200, b.Do("GET", ep, bob.Token, nil)); r.Source() != "cache" {
			t.Fatalf("%s: second read from %q", ep, r.Source())
		}
	}
}

// TestInvalidationAcrossInstances: while two readers on each of two
// instances poll a conversation's newest page (cached, replicas on), sends
// alternate between the instances; every read that starts after a send was
// acknowledged, on either instance, must show that message (or a newer
// one). The check counts stale reads and wants none: there is no time
// allowance, so invalidating after the acknowledgement instead of before
// fails however fast it is. It holds while Redis answers (each round trip
// may take a second here, and none may fail); what a failing Redis costs is
// TestRedisOutage's. The time until every reader has seen a send is logged,
// a figure for this machine.
func TestInvalidationAcrossInstances(t *testing.T) {
	svc := newService(t)
	a, b := svc.instance(instanceOptions{patientCache: true}), svc.instance(instanceOptions{patientCache: true})
	sender, r1, r2 := a.CreateUser(), a.CreateUser(), a.CreateUser()
	conv := a.CreateConversation(sender, "live", r1, r2)
	hello := a.Send(conv.ID, sender, "hello")
	svc.optimize(a, true, true)
	path := "/v1/conversations/" + conv.ID + "/messages?limit=1"

	// The sends so far: sent[id] is a message's number (1, 2, … in send
	// order; hello is 0), acked[n-1] when send n was acknowledged — taken
	// once its answer is in, so later than the server's acknowledgement:
	// a read counted as starting after it truly did.
	var mu sync.Mutex
	sent := map[string]int{hello.ID: 0}
	var acked []time.Time
	// ackedBefore is the number of the last send acknowledged before t.
	ackedBefore := func(t time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		return sort.Search(len(acked), func(i int) bool { return !acked[i].Before(t) })
	}
	type poller struct {
		c    *client
		u    user
		name string
		// checked is the last send a read that started after its
		// acknowledgement has shown (or found stale); seen[n] when it did.
		checked atomic.Int64
		mu      sync.Mutex
		seen    map[int]time.Time
	}
	var pollers []*poller
	for ci, c := range []*client{a, b} {
		for _, u := range []user{r1, r2} {
			pollers = append(pollers, &poller{c: c, u: u, name: fmt.Sprintf("instance %c, %s", 'a'+ci, u.Handle), seen: map[int]time.Time{}})
		}
	}
	var reads, hits, checkedReads, stale atomic.Int64
	checkedOn := [2]atomic.Int64{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for pi, p := range pollers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				r := p.c.Do("GET", path, p.u.Token, nil)
				done := time.Now()
				if r.Status != 200 {
					t.Errorf("poll: %d %s", r.Status, r.Body)
					return
				}
				var pg messagePage
				r.Decode(t, &pg)
				reads.Add(1)
				if r.Source() == "cache" {
					hits.Add(1)
				}
				if len(pg.Messages) != 1 {
					t.Errorf("%s: page %s", p.name, r.Body)
					return
				}
				due := ackedBefore(start)
				mu.Lock()
				n, known := sent[pg.Messages[0].ID]
				mu.Unlock()
				if !known { // a send whose answer is not in yet: newer than any acknowledged
					n = due
				}
				if due > 0 {
					checkedReads.Add(1)
					checkedOn[pi/2].Add(1)
					if n < due {
						stale.Add(1)
						t.Errorf("%s: a read started after send %d was acknowledged shows send %d (source %s)", p.name, due, n, r.Source())
					}
					p.checked.Store(int64(due))
				}
				p.mu.Lock()
				if _, ok := p.seen[n]; !ok {
					p.seen[n] = done
				}
				p.mu.Unlock()
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()

	const sends = 60
	lags := make([]time.Duration, 0, sends)
	for i := 1; i <= sends; i++ {
		m := []*client{a, b}[i%2].Send(conv.ID, sender, fmt.Sprint("live ", i))
		now := time.Now()
		mu.Lock()
		sent[m.ID] = i
		acked = append(acked, now)
		mu.Unlock()
		// And at once, on the other instance: the read closest to the
		// acknowledgement.
		other := []*client{b, a}[i%2]
		var pg messagePage
		r := other.Must(200, other.Do("GET", path, r1.Token, nil))
		r.Decode(t, &pg)
		checkedReads.Add(1)
		checkedOn[1-i%2].Add(1)
		if len(pg.Messages) != 1 || pg.Messages[0].ID != m.ID {
			stale.Add(1)
			t.Errorf("a read on the other instance right after send %d was acknowledged shows %s (source %s)", i, r.Body, r.Source())
		}
		// Every reader checks this send before the next one.
		stacktest.WaitFor(t, 10*time.Second, fmt.Sprintf("every reader to read after send %d", i), func() bool {
			for _, p := range pollers {
				if p.checked.Load() < int64(i) {
					return false
				}
			}
			return true
		})
		var lag time.Duration
		for _, p := range pollers {
			p.mu.Lock()
			lag = max(lag, p.seen[i].Sub(now))
			p.mu.Unlock()
		}
		lags = append(lags, lag)
	}
	t.Logf("%d sends across 2 instances, 4 readers: %d reads (%.0f%% cache hits), %d started after an acknowledgement (%d on a, %d on b), %d stale; every reader saw a send after p50 %v, p99 %v (this machine)",
		sends, reads.Load(), 100*float64(hits.Load())/float64(max(reads.Load(), 1)), checkedReads.Load(), checkedOn[0].Load(), checkedOn[1].Load(), stale.Load(),
		percentile(lags, 50).Round(time.Millisecond), percentile(lags, 99).Round(time.Millisecond))
	// The guarantee is the cache's while Redis answers (a failed operation
	// fails open: see TestRedisOutage): it must have, for the count to mean
	// anything.
	if ea, eb := a.cacheErrors(t), b.cacheErrors(t); ea+eb != 0 {
		t.Fatalf("%v and %v Redis operations failed on the two instances: the run did not test invalidation with Redis answering", ea, eb)
	}
	if stale.Load() != 0 {
		t.Fatalf("%d of %d reads started after an acknowledgement showed an older message", stale.Load(), checkedReads.Load())
	}
	if hits.Load() == 0 || checkedOn[0].Load() == 0 || checkedOn[1].Load() == 0 {
		t.Fatalf("%d cache hits, %d and %d checked reads on the two instances: the test did not exercise the cache on both", hits.Load(), checkedOn[0].Load(), checkedOn[1].Load())
	}
}

// TestUserListInvalidation: a user's cached conversation list, single
// conversation and unread counts change when any of their conversations
// changes (a send by someone else, a new conversation) and when they mark
// a conversation read, on both instances.
func TestUserListInvalidation(t *testing.T) {
	svc := newService(t)
	a, b := svc.instance(instanceOptions{patientCache: true}), svc.instance(instanceOptions{patientCache: true})
	me, x, y := a.CreateUser(), a.CreateUser(), a.CreateUser()
	c1 := a.CreateConversation(x, "one", me)
	c2 := a.CreateConversation(y, "two", me)
	svc.optimize(a, true, false)

	list := func(c *client) (conversationList, string) {
		r := c.Must(200, c.Do("GET", "/v1/conversations", me.Token, nil))
		var l conversationList
		r.Decode(t, &l)
		return l, r.Source()
	}
	unread := func(c *client) (unreadSummary, string) {
		r := c.Must(200, c.Do("GET", "/v1/unread", me.Token, nil))
		var u unreadSummary
		r.Decode(t, &u)
		return u, r.Source()
	}
	warm := func() {
		for _, c := range []*client{a, b} {
			list(c)
			unread(c)
		}
		if _, src := list(b); src != "cache" {
			t.Fatalf("list not cached (%s)", src)
		}
		if _, src := unread(a); src != "cache" {
			t.Fatalf("unread not cached (%s)", src)
		}
	}

	warm()
	m := b.Send(c1.ID, x, "ping") // c1 moves to the top, one unread
	for _, c := range []*client{a, b} {
		l, _ := list(c)
		if len(l.Conversations) != 2 || l.Conversations[0].ID != c1.ID || l.Conversations[0].LastMessage == nil || l.Conversations[0].LastMessage.ID != m.ID {
			t.Fatalf("list after a send: %+v", l)
		}
		if u, _ := unread(c); u.Total != 1 {
			t.Fatalf("unread after a send: %+v", u)
		}
		var one conversation
		c.Must(200, c.Do("GET", "/v1/conversations/"+c1.ID, me.Token, nil)).Decode(t, &one)
		if one.UnreadCount != 1 {
			t.Fatalf("conversation after a send: %+v", one)
		}
	}

	warm()
	c3 := b.CreateConversation(y, "three", me) // a new conversation on top
	if l, _ := list(a); len(l.Conversations) != 3 || l.Conversations[0].ID != c3.ID {
		t.Fatalf("list after a new conversation: %+v", l)
	}

	warm()
	a.Must(200, a.Do("POST", "/v1/conversations/"+c1.ID+"/read", me.Token, map[string]string{"message_id": m.ID}))
	for _, c := range []*client{b, a} {
		if u, _ := unread(c); u.Total != 0 {
			t.Fatalf("unread after marking read: %+v", u)
		}
		if l, _ := list(c); l.Conversations[1].ID != c1.ID || l.Conversations[1].UnreadCount != 0 {
			t.Fatalf("list after marking read: %+v", l)
		}
	}
	_ = c2
}
