package cache

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/internal/wal"
)

var page = []byte(`{"messages":[],"has_more":false,"next_cursor":null}`)

func dbStandIn(context.Context, Fill) ([]byte, bool, error) { return page, true, nil }

// The hit path: one Redis round trip (lookup script) on the stack's Redis.
func BenchmarkGetOrFillHit(b *testing.B) {
	c := newCache(b, Config{OpTimeout: time.Second})
	ctx := context.Background()
	key := ConversationKey(1, KindHistory, "limit=50")
	if _, _, err := c.GetOrFill(ctx, "bench", key, dbStandIn); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, r, _ := c.GetOrFill(ctx, "bench", key, dbStandIn); r != ResultHit {
				b.Fatalf("result %v", r)
			}
		}
	})
}

// A plain GET of a value of the same size: the floor the hit path (one Lua
// round trip) compares with.
func BenchmarkRedisGetBaseline(b *testing.B) {
	c := newCache(b, Config{OpTimeout: time.Second})
	ctx := context.Background()
	key := c.ks.prefix + "{conv:1}:plain"
	if err := c.client.Set(ctx, key, page, time.Minute).Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.client.Get(ctx, key).Bytes(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The bypass path (breaker open): the cost the cache adds while Redis is down.
func BenchmarkGetOrFillBypass(b *testing.B) {
	c := New(nil, Config{Logger: quiet})
	ctx := context.Background()
	key := ConversationKey(1, KindHistory, "limit=50")
	b.ReportAllocs()
	for b.Loop() {
		if _, r, _ := c.GetOrFill(ctx, "bench", key, dbStandIn); r != ResultBypass {
			b.Fatalf("result %v", r)
		}
	}
}

func BenchmarkUserToken(b *testing.B) {
	c := newCache(b, Config{OpTimeout: time.Second})
	ctx := context.Background()
	if err := c.SetUserToken(ctx, 1, pos("0/1")); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := c.UserToken(ctx, 1); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// legacyLookupScript is the lookup script before the cache epoch (commit
// 3035cd9): generation and write position only. BenchmarkHitPath runs it
// beside the current one, so that the cost of the epoch and floor checks on
// a hit is measured in the same run, on the same Redis.
var legacyLookupScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'g', 'l')
local g, l = r[1], r[2]
if not g then
  local t = redis.call('TIME')
  g = t[1] .. string.format('%06d', tonumber(t[2]))
  l = false
  redis.call('HSET', KEYS[1], 'g', g)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local dk = ARGV[1] .. g .. ARGV[2]
local v = redis.call('GET', dk)
if v then return {g, l, v, 0} end
if redis.call('SET', dk .. ':lease', '1', 'NX', 'PX', ARGV[3]) then return {g, l, false, 1} end
return {g, l, false, 0}
`)

var legacyErr atomic.Value

// legacyHit is GetOrFill's hit path before the cache epoch (commit
// 3035cd9), step for step: breaker, pending owners, lookup, reply parsing,
// hit counter.
func legacyHit(ctx context.Context, c *Cache, endpoint string, key Key) ([]byte, Result) {
	ctr := c.m.counters(endpoint)
	if !c.br.allow() {
		return nil, ResultBypass
	}
	tag := key.tag()
	genKey := c.ks.prefix + tag + ":gen"
	if c.pending.blocks(genKey) {
		return nil, ResultBypass
	}
	head, tail := c.ks.prefix+tag+":"+key.kind+":g", ":"+key.params
	octx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout)
	defer cancel()
	r, err := legacyLookupScript.Run(octx, c.client, []string{genKey}, head, tail, c.leaseMs, c.genTTLMs).Slice()
	c.observe(ctx, "lookup", err)
	if err != nil || len(r) != 4 {
		legacyErr.Store(fmt.Sprintf("%v %v", err, r))
		return nil, ResultError
	}
	gen, _ := r[0].(string)
	if _, err := strconv.ParseInt(gen, 10, 64); err != nil {
		return nil, ResultError
	}
	if l, ok := r[1].(string); ok {
		_, _ = wal.Parse(l)
	}
	v, ok := r[2].(string)
	if !ok {
		return nil, ResultMiss
	}
	ctr[ResultHit].Inc()
	return []byte(v), ResultHit
}

// BenchmarkHitPath compares, in one run, a cache hit as it is now (epoch
// view check; record epoch in the lookup script) with the hit path before
// the cache epoch (commit 3035cd9), on the same key of the stack's Redis.
// The two alternate in blocks of 100 hits, so that the load of a shared
// machine weighs on both alike. Reported per hit: the client's latency
// (before-ns, epoch-ns, added-%) and Redis's own time for the script call
// (before-redis-ns, epoch-redis-ns, from INFO commandstats), which the load
// of the client's machine does not inflate.
//
//	go test -run '^$' -bench HitPath -benchtime 20000x -count 5 ./internal/cache
func BenchmarkHitPath(b *testing.B) {
	c := newCache(b, Config{OpTimeout: time.Second})
	ctx := context.Background()
	key := ConversationKey(1, KindHistory, "limit=50")
	if _, _, err := c.GetOrFill(ctx, "bench", key, dbStandIn); err != nil {
		b.Fatal(err)
	}
	kinds := []func() Result{
		func() Result { _, r := legacyHit(ctx, c, "bench", key); return r },
		func() Result { _, r, _ := c.GetOrFill(ctx, "bench", key, dbStandIn); return r },
	}
	const block = 100
	var wall [2]time.Duration
	var calls, usec [2]float64
	b.ResetTimer()
	for done := 0; done < b.N; done += block {
		for k, hit := range kinds {
			c0, u0 := scriptStats(b, c)
			start := time.Now()
			for range block {
				if r := hit(); r != ResultHit {
					b.Fatalf("kind %d: result %v (legacy error %v; lookup errors %v)", k, r, legacyErr.Load(), testutil.ToFloat64(c.m.errors.WithLabelValues("lookup")))
				}
			}
			wall[k] += time.Since(start)
			c1, u1 := scriptStats(b, c)
			calls[k] += c1 - c0
			usec[k] += u1 - u0
		}
	}
	hits := float64((b.N + block - 1) / block * block)
	b.ReportMetric(float64(wall[0].Nanoseconds())/hits, "before-ns/hit")
	b.ReportMetric(float64(wall[1].Nanoseconds())/hits, "epoch-ns/hit")
	b.ReportMetric(100*(float64(wall[1])/float64(wall[0])-1), "added-%")
	b.ReportMetric(1000*usec[0]/calls[0], "before-redis-ns/hit")
	b.ReportMetric(1000*usec[1]/calls[1], "epoch-redis-ns/hit")
}

// BenchmarkHitAllocs is the hit path alone, for its allocations.
func BenchmarkHitAllocs(b *testing.B) {
	c := newCache(b, Config{OpTimeout: time.Second})
	ctx := context.Background()
	key := ConversationKey(1, KindHistory, "limit=50")
	if _, _, err := c.GetOrFill(ctx, "bench", key, dbStandIn); err != nil {
		b.Fatal(err)
	}
	for _, k := range []struct {
		name string
		hit  func() Result
	}{
		{"before", func() Result { _, r := legacyHit(ctx, c, "bench", key); return r }},
		{"epoch", func() Result { _, r, _ := c.GetOrFill(ctx, "bench", key, dbStandIn); return r }},
	} {
		b.Run(k.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if r := k.hit(); r != ResultHit {
					b.Fatalf("result %v", r)
				}
			}
		})
	}
}

// scriptStats reads Redis's count of EVALSHA calls and the microseconds
// they took (INFO commandstats).
func scriptStats(b *testing.B, c *Cache) (calls, usec float64) {
	info, err := c.client.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_evalsha:")
		if !ok {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			f, _ := strconv.ParseFloat(v, 64)
			switch k {
			case "calls":
				calls = f
			case "usec":
				usec = f
			}
		}
	}
	return calls, usec
}
