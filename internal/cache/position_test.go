package cache

import (
	"testing"
	"time"
)

var positionPairs = [][2]string{
	{"0/1", "0/0"}, {"0/0", "0/1"}, {"0/1", "0/1"},
	{"1/0", "0/FFFFFFFF"}, {"0/FFFFFFFF", "1/0"},
	{"16/B374D848", "16/B374D847"}, {"16/b374d848", "16/B374D848"},
	{"FFFFFFFF/FFFFFFFF", "FFFFFFFE/FFFFFFFF"},
	{"e1:0/5", "e1:0/4"}, {"e1:0/4", "e1:0/5"}, {"e2:0/1", "e1:0/5"}, {"0/9", "e1:0/1"},
	{"7311052189873582153:16/B3", "7311052189873582153:16/B2"},
	{"a:b:0/2", "a:b:0/1"},
	{"*", "0/1"}, {"0/1", "*"}, {"*", "*"},
	{"0/1", "garbage"}, {"garbage", "0/1"},
}

func TestSupersedes(t *testing.T) {
	want := []bool{
		true, false, false,
		true, false,
		true, false,
		true,
		true, false, true, true,
		true,
		true,
		true, false, false,
		true, false,
	}
	for i, p := range positionPairs {
		if got := supersedes(p[0], p[1]); got != want[i] {
			t.Errorf("supersedes(%q, %q) = %v, want %v", p[0], p[1], got, want[i])
		}
	}
	if !supersedes("0/1", "") {
		t.Error("a position does not supersede none")
	}
}

// The Lua twin in the scripts agrees with supersedes.
func TestLuaNewerMatchesGo(t *testing.T) {
	c := newCache(t, Config{})
	ctx := testCtx(t)
	for i, p := range positionPairs {
		key := c.ks.token(int64(1000 + i))
		if err := c.client.Set(ctx, key, p[1], time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		got, err := raiseScript.Run(ctx, c.client, []string{key}, p[0], 60000).Text()
		if err != nil {
			t.Fatalf("raise %q over %q: %v", p[0], p[1], err)
		}
		if lua, goes := got == p[0] && p[0] != p[1], supersedes(p[0], p[1]); lua != goes {
			t.Errorf("%q over %q: Lua replaced=%v, Go supersedes=%v", p[0], p[1], lua, goes)
		}
	}
}

func FuzzParsePosition(f *testing.F) {
	for _, p := range positionPairs {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		pa, err := parsePosition(a)
		if err == nil {
			if _, err := parsePosition(pa.epoch + ":" + a[len(a)-len(trimEpoch(a)):]); err != nil {
				t.Errorf("re-parse of %q: %v", a, err)
			}
		}
		// Antisymmetric within an epoch; never panics.
		if supersedes(a, b) && supersedes(b, a) {
			pb, errb := parsePosition(b)
			if err == nil && errb == nil && pa.epoch == pb.epoch {
				t.Errorf("%q and %q supersede each other", a, b)
			}
		}
	})
}

func trimEpoch(s string) string {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ':' {
			return s[i+1:]
		}
	}
	return s
}
