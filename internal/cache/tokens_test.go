package cache

import (
	"errors"
	"testing"
	"time"
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
		set  string
		want string
	}{
		{"0/100", "0/100"},
		{"0/50", "0/100"}, // raise only
		{"0/100", "0/100"},
		{"1/0", "1/0"},
		{"0/FFFFFFFF", "1/0"},
		{"AB:0/1", "AB:0/1"}, // new epoch replaces
		{"AB:0/0", "AB:0/1"},
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
	for _, bad := range []string{"", "0", "0/", "/1", "x/1", "0/123456789", "e:", "*"} {
		if err := a.SetUserToken(ctx, 2, bad, time.Minute); !errors.Is(err, ErrBadPosition) {
			t.Errorf("SetUserToken(%q) = %v, want ErrBadPosition", bad, err)
		}
	}
}

func TestUserTokenTTL(t *testing.T) {
	prefix := testPrefix()
	a := newCache(t, Config{Prefix: prefix})
	b := newCache(t, Config{Prefix: prefix})
	ctx := testCtx(t)
	if err := a.SetUserToken(ctx, 3, "0/10", 150*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// A lower position with a shorter TTL neither lowers nor shortens it.
	if err := a.SetUserToken(ctx, 4, "0/20", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.SetUserToken(ctx, 4, "0/5", 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	for _, c := range []*Cache{a, b} {
		if lsn, ok, err := c.UserToken(ctx, 3); ok || err != nil {
			t.Errorf("expired token still there: %q, %v", lsn, err)
		}
		if lsn, ok, err := c.UserToken(ctx, 4); !ok || err != nil || lsn != "0/20" {
			t.Errorf("token 4 = %q, %v, %v; want 0/20 (not lowered, not shortened)", lsn, ok, err)
		}
	}
}

// The local record covers a token Redis lost (restart, eviction).
func TestUserTokenLocalFloor(t *testing.T) {
	c := newCache(t, Config{})
	ctx := testCtx(t)
	if err := c.SetUserToken(ctx, 5, "0/500", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := c.client.Set(ctx, c.ks.token(5), "0/400", time.Minute).Err(); err != nil { // older, e.g. after a restart
		t.Fatal(err)
	}
	if lsn, _, _ := c.UserToken(ctx, 5); lsn != "0/500" {
		t.Errorf("UserToken = %q, want this instance's 0/500", lsn)
	}
	if err := c.client.Del(ctx, c.ks.token(5)).Err(); err != nil {
		t.Fatal(err)
	}
	if lsn, ok, err := c.UserToken(ctx, 5); lsn != "0/500" || !ok || err != nil {
		t.Errorf("UserToken after Redis lost it = %q, %v, %v", lsn, ok, err)
	}
}
