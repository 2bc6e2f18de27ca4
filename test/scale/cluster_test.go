//go:build scale

package scale

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestClusterPrimaryKilled: readers on two instances poll the newest page
// of conversations whose cache keys live on all three cluster nodes while a
// writer sends to them through both instances; one cluster primary is
// killed (SIGKILL) and later brought back by `stack up` (empty: no
// persistence). Every request succeeds throughout — the cache fails open
// to the database for the dead node's keys — and no page is ever stale: a
// read that began after a send was acknowledged and misses it, served by
// the cache or the primary, is counted (a replica may lag for a reader who
// is not the writer; those reads are counted apart), and none is allowed,
// before, during or after the outage. After the node is back, its
// conversations are served from the cache again.
func TestClusterPrimaryKilled(t *testing.T) {
	svc := newService(t)
	a, b := svc.instance(), svc.instance()
	ins := []*instance{a, b}
	ctx := context.Background()
	const victim = 1 // redis2

	// Conversations until the victim holds some and the others too.
	nodeOfSlot := svc.slotOwners()
	node := svc.nodes()[0]
	sender, reader := a.CreateUser(), a.CreateUser()
	type conv struct {
		id     string
		node   int
		acked  atomic.Int64 // newest acknowledged message id
		onDead bool
	}
	var convs []*conv
	onVictim, elsewhere := 0, 0
	for i := 0; (onVictim < 3 || elsewhere < 3) && i < 60; i++ {
		c := a.CreateConversation(sender, fmt.Sprint("k", i), reader)
		slot, err := node.ClusterKeySlot(ctx, "{conv:"+c.ID+"}").Result()
		if err != nil {
			t.Fatal(err)
		}
		cv := &conv{id: c.ID, node: nodeOfSlot(slot)}
		cv.onDead = cv.node == victim
		if cv.onDead {
			if onVictim >= 3 {
				continue
			}
			onVictim++
		} else {
			if elsewhere >= 3 {
				continue
			}
			elsewhere++
		}
		m := a.Send(c.ID, sender, "first")
		cv.acked.Store(id(t, m.ID))
		convs = append(convs, cv)
	}
	if onVictim < 3 || elsewhere < 3 {
		t.Fatalf("%d conversations on the victim node, %d elsewhere: want 3 and 3", onVictim, elsewhere)
	}
	svc.rollout(true, true, a, b)

	// phase: 0 healthy, 1 node dead, 2 node back.
	var phase atomic.Int32
	type counts struct {
		mu            sync.Mutex
		bySource      [3]map[string]int // victim's conversations, by phase
		errors, stale []string
		replicaBehind int
	}
	var y counts
	for i := range y.bySource {
		y.bySource[i] = map[string]int{}
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	for _, in := range ins {
		for _, cv := range convs {
			wg.Go(func() {
				path := "/v1/conversations/" + cv.id + "/messages?limit=1"
				for runCtx.Err() == nil {
					floor, ph := cv.acked.Load(), phase.Load()
					r := in.Do("GET", path, reader.Token, nil)
					if r.Status != 200 {
						y.mu.Lock()
						y.errors = append(y.errors, fmt.Sprintf("phase %d: read: HTTP %d %s", ph, r.Status, r.Body))
						y.mu.Unlock()
						continue
					}
					var p stacktest.MessagePage
					r.Decode(t, &p)
					newest := int64(0)
					if len(p.Messages) > 0 {
						newest = id(t, p.Messages[0].ID)
					}
					y.mu.Lock()
					if cv.onDead {
						y.bySource[ph][r.Source()]++
					}
					if newest < floor {
						if r.Source() == "replica" {
							y.replicaBehind++
						} else {
							y.stale = append(y.stale, fmt.Sprintf("phase %d, conversation %s (node %d) from the %s: newest %d, %d acknowledged before the read", ph, cv.id, cv.node+1, r.Source(), newest, floor))
						}
					}
					y.mu.Unlock()
					time.Sleep(2 * time.Millisecond)
				}
			})
		}
	}
	wg.Go(func() {
		for k := 0; runCtx.Err() == nil; k++ {
			cv := convs[k%len(convs)]
			in := ins[k%2]
			r := in.Do("POST", "/v1/conversations/"+cv.id+"/messages", sender.Token, map[string]string{"body": fmt.Sprint("s", k)})
			if r.Status != 201 {
				y.mu.Lock()
				y.errors = append(y.errors, fmt.Sprintf("phase %d: send: HTTP %d %s", phase.Load(), r.Status, r.Body))
				y.mu.Unlock()
				continue
			}
			var m stacktest.Message
			r.Decode(t, &m)
			cv.acked.Store(id(t, m.ID))
			time.Sleep(15 * time.Millisecond)
		}
	})

	time.Sleep(2 * time.Second)
	svc.restartInCleanup()
	var pid int
	for _, c := range svc.stack.Status(ctx) {
		if c.Name == "redis2" {
			pid = c.PID
		}
	}
	if pid == 0 {
		t.Fatal("no pid for redis2")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill redis2 (pid %d): %v", pid, err)
	}
	phase.Store(1)
	killed := time.Now()
	time.Sleep(3 * time.Second)
	upCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if _, err := svc.upAgain(upCtx); err != nil {
		t.Fatal(err)
	}
	phase.Store(2)
	downFor := time.Since(killed)
	// Back: the victim's conversations are cached again.
	stacktest.WaitFor(t, 20*time.Second, "cache hits on the restarted node's conversations", func() bool {
		y.mu.Lock()
		defer y.mu.Unlock()
		return y.bySource[2]["cache"] > 20
	})
	time.Sleep(2 * time.Second)
	stop()
	wg.Wait()

	y.mu.Lock()
	defer y.mu.Unlock()
	t.Logf("redis2 killed for %v; the victim node's conversations by X-Read-Source: before %v, while dead %v, after %v; replica reads behind the newest acknowledged send: %d; failed: %d; stale: %d",
		downFor.Round(time.Millisecond), y.bySource[0], y.bySource[1], y.bySource[2], y.replicaBehind, len(y.errors), len(y.stale))
	if len(y.errors) > 0 {
		t.Errorf("%d requests failed (none may: the cache fails open), e.g. %s", len(y.errors), y.errors[0])
	}
	if len(y.stale) > 0 {
		t.Errorf("%d stale reads (none allowed), e.g. %s", len(y.stale), y.stale[0])
	}
	if y.bySource[0]["cache"] == 0 {
		t.Errorf("no cache hit on the victim's conversations before the kill: the test did not exercise the cache")
	}
	if y.bySource[1]["primary"]+y.bySource[1]["replica"] == 0 {
		t.Errorf("no database read of the victim's conversations while it was dead: %v", y.bySource[1])
	}
}

// slotOwners returns the function from a slot to the index of the node
// that serves it (the order of RedisAddrs: redis1, redis2, redis3).
func (s *service) slotOwners() func(slot int64) int {
	s.t.Helper()
	ranges, err := s.nodes()[0].ClusterSlots(context.Background()).Result()
	if err != nil {
		s.t.Fatal(err)
	}
	index := map[string]int{}
	for i, addr := range s.stack.RedisAddrs() {
		index[addr] = i
	}
	return func(slot int64) int {
		for _, r := range ranges {
			if int64(r.Start) <= slot && slot <= int64(r.End) {
				if i, ok := index[r.Nodes[0].Addr]; ok {
					return i
				}
			}
		}
		s.t.Fatalf("no node serves slot %d (%+v)", slot, ranges)
		return -1
	}
}

// id is a message id as a number (ids grow within a conversation).
func id(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("message id %q: %v", s, err)
	}
	return n
}
