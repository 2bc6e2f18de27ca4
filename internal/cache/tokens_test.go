package cache

import (
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/wal"
)

func TestUserTokens(t *testing.T) {
	prefix := testPrefix()
	a := newCache(t, Config{Prefix: prefix})
	b := newCache(t, Config{Prefix: prefix}) // another instance
	ctx := testCtx(t)

	if _, ok, err := b.UserToken(ctx, 1); ok || err != nil {
		t.Fatalf("token of a user without writes: ok=%v, %v", ok, err)
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
		if err := a.SetUserToken(ctx, 1, st.set, time.Minute); err != nil {
			t.Fatalf("SetUserToken(%s): %v", st.set, err)
		}
		// Seen by the other instance, which has no local record.
		if got, ok, err := b.UserToken(ctx, 1); err != nil || !ok || got != st.want {
			t.Errorf("after set %s: other instance sees %q, %v, %v; want %q", st.set, got, ok, err, st.want)
		}
	}
	// A stored value that is not a position (another program's) reads as
	// unknown: the user's reads go to the primary.
	if err := a.client.Set(ctx, a.ks.token(2), "e1:0/5", time.Minute).Err(); err != nil {
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
	for i, p := range pairs {
		key := c.ks.token(int64(1000 + i))
		if err := c.client.Set(ctx, key, p.b, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		got, err := raiseScript.Run(ctx, c.client, []string{key}, p.a.String(), 60000).Text()
		if err != nil {
			t.Fatalf("raise %v over %q: %v", p.a, p.b, err)
		}
		if replaced := got == p.a.String() && p.a.String() != p.b; replaced != p.expect {
			t.Errorf("%v over %q: Lua replaced=%v, want %v", p.a, p.b, replaced, p.expect)
		}
	}
}

func TestUserTokenTTL(t *testing.T) {
	prefix := testPrefix()
	a := newCache(t, Config{Prefix: prefix})
	b := newCache(t, Config{Prefix: prefix})
	ctx := testCtx(t)
	if err := a.SetUserToken(ctx, 3, pos("0/10"), 150*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// A lower position with a shorter TTL neither lowers nor shortens it.
	if err := a.SetUserToken(ctx, 4, pos("0/20"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.SetUserToken(ctx, 4, pos("0/5"), 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	for _, c := range []*Cache{a, b} {
		if lsn, ok, err := c.UserToken(ctx, 3); ok || err != nil {
			t.Errorf("expired token still there: %q, %v", lsn, err)
		}
		if lsn, ok, err := c.UserToken(ctx, 4); !ok || err != nil || lsn != pos("0/20") {
			t.Errorf("token 4 = %q, %v, %v; want 0/20 (not lowered, not shortened)", lsn, ok, err)
		}
	}
}

// The local record covers a token Redis lost (restart, eviction).
func TestUserTokenLocalFloor(t *testing.T) {
	c := newCache(t, Config{})
	ctx := testCtx(t)
	if err := c.SetUserToken(ctx, 5, pos("0/500"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := c.client.Set(ctx, c.ks.token(5), "0/400", time.Minute).Err(); err != nil { // older, e.g. after a restart
		t.Fatal(err)
	}
	if lsn, _, _ := c.UserToken(ctx, 5); lsn != pos("0/500") {
		t.Errorf("UserToken = %q, want this instance's 0/500", lsn)
	}
	if err := c.client.Del(ctx, c.ks.token(5)).Err(); err != nil {
		t.Fatal(err)
	}
	if lsn, ok, err := c.UserToken(ctx, 5); lsn != pos("0/500") || !ok || err != nil {
		t.Errorf("UserToken after Redis lost it = %q, %v, %v", lsn, ok, err)
	}
}
