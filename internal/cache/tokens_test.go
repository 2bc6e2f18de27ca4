package cache

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/internal/wal"
)

func TestUserTokens(t *testing.T) {
	prefix := testPrefix()
	a := newCache(t, Config{Prefix: prefix})
	b := newCache(t, Config{Prefix: prefix}) // another instance
	ctx := testCtx(t)

	// A user Redis has no record of: the record is made now, and until it is
	// older than the token TTL its floor (the primary's position now) stands
	// for any write whose token Redis may have lost.
	if lsn, ok, err := b.UserToken(ctx, 1); !ok || err != nil || lsn != testFloor {
		t.Fatalf("token of a user without a record: %v, %v, %v; want the floor %v", lsn, ok, err, testFloor)
	}
	steps := []struct {
		set  wal.LSN
		want wal.LSN
	}{
		{pos("0/100"), pos("0/100")},
		{pos("0/50"), pos("0/100")}, // raise only
		{pos("0/100"), pos("0/100")},
		{pos("1/0"), pos("1/0")},
		{pos("0/FFFFFFFF"), pos("1/0")},
		{0, wal.Unknown}, // a write of unknown position: the primary until it expires
		{pos("2/0"), wal.Unknown},
	}
	for _, st := range steps {
		if err := a.SetUserToken(ctx, 1, st.set); err != nil {
			t.Fatalf("SetUserToken(%s): %v", st.set, err)
		}
		if got, ok, err := b.UserToken(ctx, 1); err != nil || !ok || got != st.want {
			t.Errorf("after set %s: other instance sees %q, %v, %v; want %q", st.set, got, ok, err, st.want)
		}
	}
	// A stored value that is not a position (another program's) reads as
	// unknown: the user's reads go to the primary.
	if err := a.SetUserToken(ctx, 2, pos("0/5")); err != nil {
		t.Fatal(err)
	}
	if err := a.client.HSet(ctx, a.ks.gen(scopeUser, 2), "t", "e1:0/5").Err(); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := b.UserToken(ctx, 2); err != nil || !ok || got != wal.Unknown {
		t.Errorf("malformed stored token: %v, %v, %v; want unknown", got, ok, err)
	}
}

// The Lua comparison in the scripts agrees with wal.LSN's order, and
// replaces a stored value that is not a position.
func TestLuaNewerMatchesGo(t *testing.T) {
	c := newCache(t, Config{})
	ctx := testCtx(t)
	newer := redis.NewScript(luaNewer + `return newer(ARGV[1], ARGV[2]) and 1 or 0`)
	lsns := []wal.LSN{0, 1, 0xFFFFFFFF, 0x1_00000000, 0x16_B374D848, 0x16_B374D849, wal.Unknown - 1, wal.Unknown}
	type pair struct {
		a      wal.LSN
		b      string
		expect bool
	}
	var pairs []pair
	for _, a := range lsns {
		for _, b := range lsns {
			pairs = append(pairs, pair{a, b.String(), a > b})
		}
		for _, junk := range []string{"garbage", "*", "e1:0/5", ""} {
			pairs = append(pairs, pair{a, junk, true})
		}
	}
	for _, p := range pairs {
		got, err := newer.Run(ctx, c.client, nil, p.a.String(), p.b).Int()
		if err != nil {
			t.Fatalf("newer(%v, %q): %v", p.a, p.b, err)
		}
		if (got == 1) != p.expect {
			t.Errorf("newer(%v, %q) = %v in Lua, want %v", p.a, p.b, got == 1, p.expect)
		}
	}
}

// A token lives TokenTTL after the user's last write; once the user's
// record is older than that, no token means no write within the TTL.
func TestUserTokenTTL(t *testing.T) {
	const ttl = 300 * time.Millisecond
	prefix := testPrefix()
	a := newCache(t, Config{Prefix: prefix, TokenTTL: ttl})
	b := newCache(t, Config{Prefix: prefix, TokenTTL: ttl})
	ctx := testCtx(t)
	if err := a.SetUserToken(ctx, 3, pos("0/10")); err != nil {
		t.Fatal(err)
	}
	if err := a.SetUserToken(ctx, 4, pos("0/20")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl / 2)
	// A lower position neither lowers the token nor keeps it from living on.
	if err := a.SetUserToken(ctx, 4, pos("0/5")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl/2 + 50*time.Millisecond)
	for _, c := range []*Cache{a, b} {
		if lsn, ok, err := c.UserToken(ctx, 3); ok || err != nil {
			t.Errorf("expired token still there: %q, %v, %v", lsn, ok, err)
		}
		if lsn, ok, err := c.UserToken(ctx, 4); !ok || err != nil || lsn != pos("0/20") {
			t.Errorf("token 4 = %q, %v, %v; want 0/20 (not lowered, extended by the later write)", lsn, ok, err)
		}
	}
}

// A user's record lost (eviction, restart) takes their token with it: the
// record made again has a floor — the primary's position when it was made —
// that stands for the lost token; without a floor the position is unknown.
func TestUserTokenRecordLost(t *testing.T) {
	primary := pos("0/700")
	c := newCache(t, Config{Position: func(context.Context) (wal.LSN, error) { return primary, nil }})
	ctx := testCtx(t)
	if err := c.SetUserToken(ctx, 5, pos("0/500")); err != nil {
		t.Fatal(err)
	}
	if err := c.client.Del(ctx, c.ks.gen(scopeUser, 5)).Err(); err != nil { // evicted
		t.Fatal(err)
	}
	if lsn, ok, err := c.UserToken(ctx, 5); lsn != primary || !ok || err != nil {
		t.Errorf("UserToken after Redis lost the record = %q, %v, %v; want the floor %v", lsn, ok, err, primary)
	}
	// The floor is kept: the primary moving on does not move it.
	primary = pos("0/900")
	if lsn, _, _ := c.UserToken(ctx, 5); lsn != pos("0/700") {
		t.Errorf("UserToken with its floor set = %q, want 0/700", lsn)
	}

	noFloor := newCache(t, Config{Position: func(context.Context) (wal.LSN, error) { return 0, errors.New("primary down") }})
	if _, _, err := noFloor.UserToken(ctx, 6); !errors.Is(err, ErrUnavailable) {
		t.Errorf("UserToken of a new record without a floor = %v, want ErrUnavailable", err)
	}
}
