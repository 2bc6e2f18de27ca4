package cache

import (
	"context"
	"testing"
	"time"
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
