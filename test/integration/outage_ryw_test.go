package integration

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestOutageReadYourWrites (issue 16): users send through instance a and
// make their next read through instance b, while the replica applies every
// transaction 100 ms late (healthy, in rotation, a little behind) and
// Redis — where b would learn the writes a made — is hung (SIGSTOP), then
// stopped, then up but without the users' records (evicted). The next read
// of the history, the conversation list, one conversation and the unread
// counts must reflect the send every time: zero violations over more than
// 1000 acknowledged sends; with Redis out, b reads from the primary and
// counts it as reason token_unknown. Half the reads carry the send's
// X-Consistency-Token, which must keep working with Redis down.
func TestOutageReadYourWrites(t *testing.T) {
	svc := newService(t)
	a, b := svc.instance(), svc.instance()
	const writers = 12
	type writer struct {
		u, partner user
		conv       conversation
	}
	ws := make([]writer, writers)
	for i := range ws {
		u, p := a.CreateUser(), a.CreateUser()
		ws[i] = writer{u: u, partner: p, conv: a.CreateConversation(u, fmt.Sprint("ryw outage ", i), p)}
		a.Send(ws[i].conv.ID, p, "hello")
	}
	// History cached and from the replica (as in the issue); the lists and
	// counts from the replica only, so that a fill's own safeguard (it never
	// stores what a replica behind the owner's last write read) cannot hide
	// a read routed to a replica behind the reader.
	svc.optimize(a, true, true, chat.EndpointMessageHistory)
	svc.optimize(a, false, true, chat.EndpointConversationList, chat.EndpointUnreadCount)
	svc.stack.DelayReplay(t, 100*time.Millisecond)
	var replicas []*pgxpool.Pool
	for _, u := range svc.db.ReplicaURLs {
		replicas = append(replicas, openPool(t, u, 4))
	}

	type outage struct {
		name    string
		sends   int64
		start   func(t *testing.T) (end func())
		evict   bool
		unknown bool // b cannot ask Redis: reads counted token_unknown
	}
	outages := []outage{
		{name: "redis hung", sends: 350, unknown: true, start: func(t *testing.T) func() { return svc.stack.Hang(t, "redis") }},
		{name: "redis stopped", sends: 350, unknown: true, start: func(t *testing.T) func() {
			svc.stopComponent("redis")
			return svc.startComponents
		}},
		{name: "user records evicted", sends: 300, evict: true, start: func(*testing.T) func() { return func() {} }},
	}
	var total atomic.Int64
	for _, o := range outages {
		t.Run(o.name, func(t *testing.T) {
			stacktest.WaitFor(t, 15*time.Second, "the cache up on both instances", func() bool { return a.cache.Up() && b.cache.Up() })
			var evict func(userID string)
			if o.evict {
				// A client of the stack's Redis (a cluster client on a
				// cluster) with go-redis's default timeouts: the test's own
				// evictions must not fail on a busy machine.
				o := &redis.UniversalOptions{Addrs: svc.stack.RedisAddrs(), DisableIdentity: true,
					MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}}
				var rdb redis.UniversalClient = redis.NewClient(o.Simple())
				if svc.stack.RedisClustered() {
					rdb = redis.NewClusterClient(o.Cluster())
				}
				t.Cleanup(func() { rdb.Close() })
				evict = func(userID string) { evictUser(t, rdb, svc.db.Name+":", userID) }
			}
			unknownBefore := readsWithReason(t, b, "token_unknown")
			end := o.start(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var (
				acked      atomic.Int64
				mu         sync.Mutex
				sources    = map[string]int{}
				violations []string
			)
			var wg sync.WaitGroup
			for _, w := range ws {
				wg.Go(func() {
					for i := 0; acked.Load() < o.sends && ctx.Err() == nil && !t.Failed(); i++ {
						kind := readKinds[i%len(readKinds)]
						if kind == "unread" {
							// The partner's message, replayed, so that a
							// replica without the writer's send shows it unread.
							q := a.Do("POST", "/v1/conversations/"+w.conv.ID+"/messages", w.partner.Token, map[string]string{"body": "ping"})
							if q.Status != 201 {
								t.Errorf("partner's send: %d %s", q.Status, q.Body)
								return
							}
							for _, replica := range replicas {
								waitReplayed(ctx, t, replica, q.Header.Get("X-Consistency-Token"))
							}
						}
						sent := a.Do("POST", "/v1/conversations/"+w.conv.ID+"/messages", w.u.Token, map[string]string{"body": fmt.Sprint(o.name, " ", i)})
						if sent.Status != 201 {
							t.Errorf("send during %s: %d %s", o.name, sent.Status, sent.Body)
							return
						}
						acked.Add(1)
						var m message
						sent.Decode(t, &m)
						if evict != nil {
							evict(w.u.ID)
						}
						var header []string
						if (i/len(readKinds))%2 == 1 { // every kind of read, with and without
							header = []string{"X-Consistency-Token", sent.Header.Get("X-Consistency-Token")}
						}
						src, bad := readBack(t, b, kind, w.u, w.conv.ID, m, header)
						mu.Lock()
						sources[kind+"/"+src]++
						if bad != "" {
							violations = append(violations, bad)
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			end()
			if ctx.Err() != nil {
				t.Fatalf("only %d sends acknowledged in 2 minutes", acked.Load())
			}
			total.Add(acked.Load())
			unknown := readsWithReason(t, b, "token_unknown") - unknownBefore
			t.Logf("%s: %d sends on a, the writer's next read on b: %d violations; reads by endpoint/source %v; b's reads with reason token_unknown: %.0f",
				o.name, acked.Load(), len(violations), sources, unknown)
			for i, v := range violations {
				if i == 10 {
					t.Errorf("… %d more", len(violations)-10)
					break
				}
				t.Error(v)
			}
			if o.unknown && unknown == 0 {
				t.Errorf("no read of b counted with reason token_unknown while it could not reach Redis")
			}
		})
	}
	if n := total.Load(); n < 1000 && !t.Failed() {
		t.Fatalf("%d sends checked, want at least 1000", n)
	}
}

// readKinds are the reads TestOutageReadYourWrites checks after a send.
var readKinds = []string{"history", "list", "conversation", "unread"}

// readBack makes u's read of kind on c and says where it was served and,
// if it does not reflect u's message m in conversation conv, how.
func readBack(t *testing.T, c *client, kind string, u user, conv string, m message, header []string) (source, violation string) {
	path := map[string]string{
		"history":      "/v1/conversations/" + conv + "/messages?limit=1",
		"list":         "/v1/conversations?limit=10",
		"conversation": "/v1/conversations/" + conv,
		"unread":       "/v1/unread",
	}[kind]
	r := c.Do("GET", path, u.Token, nil, header...)
	if r.Status != 200 {
		return "", fmt.Sprintf("%s: HTTP %d %s", kind, r.Status, r.Body)
	}
	source = r.Source()
	bad := func(format string, args ...any) string {
		return fmt.Sprintf("%s read from %s (header %v) misses the writer's message %s: %s", kind, source, len(header) > 0, m.ID, fmt.Sprintf(format, args...))
	}
	switch kind {
	case "history":
		var p messagePage
		r.Decode(t, &p)
		if len(p.Messages) == 0 || p.Messages[0].ID != m.ID {
			return source, bad("newest %+v", p.Messages)
		}
	case "list":
		var l conversationList
		r.Decode(t, &l)
		for _, cv := range l.Conversations {
			if cv.ID == conv {
				if cv.LastMessage == nil || cv.LastMessage.ID != m.ID {
					return source, bad("last message %+v", cv.LastMessage)
				}
				return source, ""
			}
		}
		return source, bad("conversation %s not in the list", conv)
	case "conversation":
		var cv conversation
		r.Decode(t, &cv)
		if cv.LastMessage == nil || cv.LastMessage.ID != m.ID {
			return source, bad("last message %+v", cv.LastMessage)
		}
	case "unread":
		var s unreadSummary
		r.Decode(t, &s)
		for _, cv := range s.Conversations {
			if cv.ID == conv && cv.UnreadCount > 0 {
				return source, bad("%d unread: the writer's send did not move their read marker", cv.UnreadCount)
			}
		}
	}
	return source, ""
}

// waitReplayed waits until the replica has replayed the position token (an
// X-Consistency-Token).
func waitReplayed(ctx context.Context, t *testing.T, replica *pgxpool.Pool, token string) {
	for ctx.Err() == nil {
		var done bool
		if err := replica.QueryRow(ctx, `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn`, token).Scan(&done); err != nil {
			t.Errorf("replica replay position: %v", err)
			return
		}
		if done {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// evictUser deletes every key of user id under prefix, as Redis evicting
// them under memory pressure would. On a cluster the user's keys share the
// slot of their hash tag: they are scanned on the node that serves it.
func evictUser(t *testing.T, rdb redis.UniversalClient, prefix, id string) {
	ctx := context.Background()
	var node redis.Cmdable = rdb
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		c, err := cc.MasterForKey(ctx, prefix+"{user:"+id+"}")
		if err != nil {
			t.Errorf("the node of user %s's slot: %v", id, err)
			return
		}
		node = c
	}
	iter := node.Scan(ctx, 0, prefix+"{user:"+id+"}*", 100).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Errorf("scan user %s's keys: %v", id, err)
		return
	}
	if len(keys) == 0 {
		t.Errorf("no key of user %s to evict", id)
		return
	}
	if err := node.Del(ctx, keys...).Err(); err != nil {
		t.Errorf("evict user %s: %v", id, err)
	}
}

// readsWithReason is b's parley_db_reads_total for reason, all endpoints.
func readsWithReason(t *testing.T, c *client, reason string) float64 {
	return counterMetric(t, c.reg, "parley_db_reads_total", map[string]string{"reason": reason})
}
