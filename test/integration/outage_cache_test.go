package integration

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestOutageCacheRecovery (issue 17): history pages and conversation lists
// are cached on two instances; Redis goes away for 3 s (hung with SIGSTOP,
// then stopped and restarted) while a user sends through one instance;
// members read through both instances during and after the outage. No read
// may miss a message acknowledged more than 100 ms before it started —
// also when the instance that made the sends is killed during the outage,
// with the invalidations it could not deliver, and when the hang is shorter
// than the cache epoch's life (400 ms: the epoch does not lapse, so the
// sends must not be acknowledged before Redis has their invalidations). The
// other instance makes no request during the outage, so nothing but the
// cache's own rules keeps it from trusting what Redis held when it answers
// again.
func TestOutageCacheRecovery(t *testing.T) {
	svc := newService(t)
	a, b := svc.instance(), svc.instance()
	sender := a.CreateUser()
	var readers []user
	for range 4 {
		readers = append(readers, a.CreateUser())
	}
	conv := a.CreateConversation(sender, "cache outage", readers...)
	for i := range 5 {
		a.Send(conv.ID, sender, fmt.Sprint("before ", i))
	}
	svc.optimize(a, true, true)

	cases := []struct {
		name   string
		stop   bool          // stop Redis and restart it (else hang it with SIGSTOP)
		outage time.Duration // how long Redis is away
		kill   bool          // the sending instance dies during the outage
	}{
		{name: "redis hung", outage: 3 * time.Second},
		{name: "redis stopped", stop: true, outage: 3 * time.Second},
		{name: "redis hung, sending instance killed", outage: 3 * time.Second, kill: true},
		{name: "redis hung 400 ms, sending instance killed", outage: 400 * time.Millisecond, kill: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stacktest.WaitFor(t, 15*time.Second, "the cache up on both instances", func() bool { return a.cache.Up() && b.cache.Up() })
			w := a
			if tc.kill {
				w = svc.instance()
			}
			log := &ackLog{}
			// Warm the cache on both instances: every reader's page and list.
			warm := map[string]int{}
			for _, c := range []*client{a, b} {
				for _, u := range readers {
					for _, path := range []string{historyPath(conv.ID), "/v1/conversations?limit=10"} {
						for range 2 {
							warm[c.Must(200, c.Do("GET", path, u.Token, nil)).Source()]++
						}
					}
				}
			}
			if warm["cache"] == 0 {
				t.Fatalf("nothing served from the cache before the outage: %v", warm)
			}

			var end func()
			if tc.stop {
				svc.stopComponent("redis")
				end = svc.startComponents
			} else {
				end = svc.stack.Hang(t, "redis")
				time.AfterFunc(tc.outage, end) // resumed on time, whatever the test is waiting for
			}
			began := time.Now()
			var wg sync.WaitGroup
			stop := make(chan struct{})
			results := &readResults{sources: map[string]int{}}
			// During the outage members read through a only (b is idle).
			for i, u := range readers {
				wg.Go(func() { readLoop(t, []*client{a}, u, conv.ID, log, results, stop, i) })
			}
			var sent int
			for sent == 0 || time.Since(began) < tc.outage-500*time.Millisecond {
				r := w.Do("POST", "/v1/conversations/"+conv.ID+"/messages", sender.Token, map[string]string{"body": fmt.Sprint(tc.name, " ", sent)})
				if r.Status != 201 {
					t.Fatalf("send during the outage: %d %s", r.Status, r.Body)
				}
				var m message
				r.Decode(t, &m)
				log.add(m.ID)
				sent++
				time.Sleep(50 * time.Millisecond)
			}
			if tc.kill {
				w.app.Close() // dies with what it owes Redis; its HTTP server answers nothing useful now
			}
			time.Sleep(time.Until(began.Add(tc.outage)))
			close(stop)
			wg.Wait()
			during := results.total
			end()
			ended := time.Now()
			// After: every member reads through both instances, at once and
			// for 1.5 s.
			stop = make(chan struct{})
			for i, u := range readers {
				wg.Go(func() { readLoop(t, []*client{b, a}, u, conv.ID, log, results, stop, i) })
			}
			time.Sleep(1500 * time.Millisecond)
			close(stop)
			wg.Wait()
			t.Logf("%s for %v: %d sends acknowledged (the first after %v); %d reads during the outage, %d in the 1.5 s after it: %d missed a message acknowledged more than 100 ms before they started; sources %v",
				tc.name, ended.Sub(began).Round(time.Millisecond), sent, log.firstAck(began).Round(time.Millisecond),
				during, results.total-during, len(results.violations), results.sources)
			for i, v := range results.violations {
				if i == 10 {
					t.Errorf("… %d more", len(results.violations)-10)
					break
				}
				t.Error(v)
			}
			if results.sources["cache"] == 0 {
				t.Errorf("the cache served nothing after the outage: %v", results.sources)
			}
		})
	}
}

func historyPath(conv string) string { return "/v1/conversations/" + conv + "/messages?limit=10" }

// ackLog is the sends acknowledged, in order, with the time of each
// acknowledgement.
type ackLog struct {
	mu  sync.Mutex
	ids []int64
	at  []time.Time
}

func (l *ackLog) add(id string) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		panic(err)
	}
	l.mu.Lock()
	l.ids = append(l.ids, n)
	l.at = append(l.at, time.Now())
	l.mu.Unlock()
}

// newestBefore is the newest message acknowledged before t (0: none).
func (l *ackLog) newestBefore(t time.Time) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.at) - 1; i >= 0; i-- {
		if l.at[i].Before(t) {
			return l.ids[i]
		}
	}
	return 0
}

func (l *ackLog) firstAck(since time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.at) == 0 {
		return 0
	}
	return l.at[0].Sub(since)
}

type readResults struct {
	mu         sync.Mutex
	total      int
	sources    map[string]int
	violations []string
}

// readLoop reads u's newest history page and conversation list, through
// the instances in turn, until stop, and records each read that misses a
// message acknowledged more than 100 ms before it started.
func readLoop(t *testing.T, via []*client, u user, conv string, log *ackLog, res *readResults, stop chan struct{}, seed int) {
	for i := seed; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		c := via[i%len(via)]
		list := (i/len(via))%2 == 1
		path := historyPath(conv)
		if list {
			path = "/v1/conversations?limit=10"
		}
		start := time.Now()
		want := log.newestBefore(start.Add(-100 * time.Millisecond))
		r := c.Do("GET", path, u.Token, nil)
		if r.Status != 200 {
			t.Errorf("read %s: %d %s", path, r.Status, r.Body)
			return
		}
		var got int64
		if list {
			var l conversationList
			r.Decode(t, &l)
			for _, cv := range l.Conversations {
				if cv.ID == conv && cv.LastMessage != nil {
					got, _ = strconv.ParseInt(cv.LastMessage.ID, 10, 64)
				}
			}
		} else {
			var p messagePage
			r.Decode(t, &p)
			if len(p.Messages) > 0 {
				got, _ = strconv.ParseInt(p.Messages[0].ID, 10, 64)
			}
		}
		res.mu.Lock()
		res.total++
		res.sources[r.Source()]++
		if got < want {
			res.violations = append(res.violations, fmt.Sprintf("%s by user %s from %s (%s) at %s: newest message %d, but %d was acknowledged more than 100 ms before",
				path, u.ID, r.Source(), c.Base, start.Format("15:04:05.000"), got, want))
		}
		res.mu.Unlock()
	}
}
