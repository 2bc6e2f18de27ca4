package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/dbrouter"
	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// benchLoad keeps writers sending through c until the returned stop is
// called: the primary's WAL moves all the time, as it does under load.
func benchLoad(b *testing.B, c *client, conv string, from user, writers int) (stop func() int64) {
	done := make(chan struct{})
	var sent atomic.Int64
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				default:
				}
				if r := c.Do("POST", "/v1/conversations/"+conv+"/messages", from.Token, map[string]string{"body": fmt.Sprint("load ", i, " ", n)}); r.Status == 201 {
					sent.Add(1)
				}
			}
		})
	}
	return func() int64 { close(done); wg.Wait(); return sent.Load() }
}

// BenchmarkPositionUnknownRead compares, under a steady write load, the
// ways to serve a read whose writer's position is unknown (Redis cannot
// say): on the primary (what Parley does: reason token_unknown), or on a
// replica proven to have replayed the primary's current position, read
// first with one round trip to the primary (pg_current_wal_insert_lsn()) and
// compared with the router's last probe of the replica (proven-by-probe), or
// with the replica's own pg_last_wal_replay_lsn() asked on the connection
// that then serves the read (proven-live). The read is a history page (the
// store's query). Reported per read: primary-trips, the statements it ran on
// the primary (the extra load a Redis outage puts there); replica-share, the
// reads a replica served; ns/op at 4 reads in flight.
//
//	go test -run '^$' -bench PositionUnknownRead -benchtime 3s -count 3 ./test/integration
func BenchmarkPositionUnknownRead(b *testing.B) {
	svc := newService(b)
	a := svc.instance()
	reader, writer := a.CreateUser(), a.CreateUser()
	conv := a.CreateConversation(reader, "history", writer)
	for i := range 50 {
		a.Send(conv.ID, writer, fmt.Sprint("m", i))
	}
	busy := a.CreateConversation(writer, "load", reader)
	svc.caughtUp()
	uid, _ := strconv.ParseInt(reader.ID, 10, 64)
	cid, _ := strconv.ParseInt(conv.ID, 10, 64)
	store := postgres.New(a.router.Primary())
	replica := openPool(b, svc.db.ReplicaURL, 8)
	page := chat.PageRequest{Direction: chat.Newest, Limit: 50}
	read := func(ctx context.Context, q postgres.Querier) error {
		_, err := store.Messages(ctx, q, uid, cid, page)
		return err
	}
	type outcome struct {
		trips   int // statements on the primary
		replica bool
	}
	ways := []struct {
		name string
		read func(ctx context.Context) (outcome, error)
	}{
		{"primary", func(ctx context.Context) (outcome, error) {
			_, err := a.router.Read(ctx, "bench", dbrouter.Route{Consistency: dbrouter.PositionUnknown, ReplicaAllowed: true}, read)
			return outcome{trips: 1}, err
		}},
		{"proven-by-probe", func(ctx context.Context) (outcome, error) {
			lsn, err := a.router.CommitLSN(ctx)
			o := outcome{trips: 1}
			if err != nil {
				return o, err
			}
			target, err := a.router.Read(ctx, "bench", dbrouter.Route{Consistency: dbrouter.ReadYourWrites(lsn), ReplicaAllowed: true}, read)
			if o.replica = target == dbrouter.TargetReplica; !o.replica {
				o.trips++
			}
			return o, err
		}},
		{"proven-live", func(ctx context.Context) (outcome, error) {
			lsn, err := a.router.CommitLSN(ctx)
			o := outcome{trips: 1}
			if err != nil {
				return o, err
			}
			conn, err := replica.Acquire(ctx)
			if err != nil {
				return o, err
			}
			defer conn.Release()
			var ok bool
			if err := conn.QueryRow(ctx, `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn`, lsn.String()).Scan(&ok); err != nil {
				return o, err
			}
			if ok {
				o.replica = true
				return o, read(ctx, conn)
			}
			_, err = a.router.Read(ctx, "bench", dbrouter.Route{}, read)
			o.trips++
			return o, err
		}},
	}
	for _, w := range ways {
		b.Run(w.name, func(b *testing.B) {
			stop := benchLoad(b, a, busy.ID, writer, 2)
			var trips atomic.Int64
			var onReplica atomic.Int64
			b.SetParallelism(2)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					o, err := w.read(ctx)
					if err != nil {
						b.Error(err)
						return
					}
					trips.Add(int64(o.trips))
					if o.replica {
						onReplica.Add(1)
					}
				}
			})
			b.StopTimer()
			sent := stop()
			b.ReportMetric(float64(trips.Load())/float64(b.N), "primary-trips/op")
			b.ReportMetric(float64(onReplica.Load())/float64(b.N), "replica-share")
			b.ReportMetric(float64(sent)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}

// BenchmarkReadsDuringRedisOutage measures what a Redis outage costs the
// reads: the same mixed read load (16 members of 4 conversations reading
// history pages, conversation lists, one conversation, unread counts; 2
// writers sending through another instance), on the optimized path with
// the cache and the replica, then with the replica only, each with Redis
// up and with Redis hung (SIGSTOP for the whole sub-benchmark). Reported:
// primary-share, cache-share and replica-share of the reads, and their p50
// and p95 latency.
//
//	go test -run '^$' -bench ReadsDuringRedisOutage -benchtime 5s -count 3 ./test/integration
func BenchmarkReadsDuringRedisOutage(b *testing.B) {
	svc := newService(b)
	a, c := svc.instance(), svc.instance()
	var members []user
	var convs []conversation
	for i := range 4 {
		owner := a.CreateUser()
		group := []user{owner}
		for range 3 {
			group = append(group, a.CreateUser())
		}
		conv := a.CreateConversation(owner, fmt.Sprint("group ", i), group[1:]...)
		for j := range 30 {
			a.Send(conv.ID, group[j%4], fmt.Sprint("m", j))
		}
		members = append(members, group...)
		convs = append(convs, conv)
	}
	writer := a.CreateUser()
	busy := a.CreateConversation(writer, "load", members[0])
	for _, phase := range []struct {
		name        string
		cache, hung bool
	}{
		{"cache+replica/redis-up", true, false},
		{"cache+replica/redis-hung", true, true},
		{"replica/redis-up", false, false},
		{"replica/redis-hung", false, true},
	} {
		svc.optimize(a, phase.cache, true)
		stacktest.WaitFor(b, 15*time.Second, "the cache up", func() bool { return c.cache.Up() && a.cache.Up() })
		var resume func()
		if phase.hung {
			resume = svc.stack.Hang(b, "redis")
		}
		b.Run(phase.name, func(b *testing.B) {
			stop := benchLoad(b, a, busy.ID, writer, 2)
			var mu sync.Mutex
			var lat []time.Duration
			sources := map[string]int{}
			b.SetParallelism(2)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := rand.N(len(members))
					u, conv := members[i], convs[i/4]
					path := []string{historyPath(conv.ID), "/v1/conversations?limit=10", "/v1/conversations/" + conv.ID, "/v1/unread"}[rand.N(4)]
					start := time.Now()
					r := c.Do("GET", path, u.Token, nil)
					d := time.Since(start)
					if r.Status != 200 {
						b.Errorf("%s: %d %s", path, r.Status, r.Body)
						return
					}
					mu.Lock()
					lat = append(lat, d)
					sources[r.Source()]++
					mu.Unlock()
				}
			})
			b.StopTimer()
			stop()
			n := float64(len(lat))
			b.ReportMetric(float64(sources["primary"])/n, "primary-share")
			b.ReportMetric(float64(sources["cache"])/n, "cache-share")
			b.ReportMetric(float64(sources["replica"])/n, "replica-share")
			b.ReportMetric(float64(percentile(lat, 50).Microseconds())/1e3, "p50-ms")
			b.ReportMetric(float64(percentile(lat, 95).Microseconds())/1e3, "p95-ms")
		})
		if resume != nil {
			resume()
		}
	}
}
