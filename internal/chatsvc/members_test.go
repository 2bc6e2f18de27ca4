package chatsvc

import (
	"bytes"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/chat"
)

func TestPackMembers(t *testing.T) {
	body := []byte(`{"messages":[]}` + "\n")
	tests := []struct {
		name    string
		members []int64
		user    int64
		member  bool
	}{
		{"first", []int64{3, 7, 1 << 40}, 3, true},
		{"middle", []int64{3, 7, 1 << 40}, 7, true},
		{"large id", []int64{3, 7, 1 << 40}, 1 << 40, true},
		{"absent", []int64{3, 7, 1 << 40}, 5, false},
		{"beyond", []int64{3, 7}, 8, false},
		{"no members", nil, 3, false},
		{"thousand", thousand(), 999 * 13, true},
	}
	for _, tt := range tests {
		v := packMembers(tt.members, body)
		got, member := unpackMembers(v, tt.user)
		if member != tt.member || !bytes.Equal(got, body) {
			t.Errorf("%s: member %v body %q; want %v", tt.name, member, got, tt.member)
		}
	}
	for _, bad := range [][]byte{nil, {}, []byte("{}"), {'M'}, {'M', 0xff}, {'M', 5, 1}} {
		if _, member := unpackMembers(bad, 1); member {
			t.Errorf("malformed value %q taken for a member's", bad)
		}
	}
}

func thousand() []int64 {
	ids := make([]int64, 1000)
	for i := range ids {
		ids[i] = int64(i) * 13
	}
	return ids
}

func FuzzUnpackMembers(f *testing.F) {
	f.Add(packMembers([]int64{1, 2, 3}, []byte("body")), int64(2))
	f.Add([]byte{'M', 0x80}, int64(1))
	f.Fuzz(func(t *testing.T, v []byte, user int64) {
		body, _ := unpackMembers(v, user) // must not panic
		if len(body) > len(v) {
			t.Fatalf("body longer than the value")
		}
	})
}

func TestAuthCache(t *testing.T) {
	now := time.Now()
	c := newAuthCache(time.Minute, 4)
	key := func(i byte) (k [32]byte) { k[0] = i; return k }
	c.put(key(1), chat.User{ID: 1}, now)
	if u, ok := c.get(key(1), now.Add(59*time.Second)); !ok || u.ID != 1 {
		t.Fatalf("fresh entry: %+v %v", u, ok)
	}
	if _, ok := c.get(key(1), now.Add(61*time.Second)); ok {
		t.Fatal("expired entry returned")
	}
	if _, ok := c.get(key(2), now); ok {
		t.Fatal("unknown key returned")
	}
	for i := byte(2); i < 20; i++ {
		c.put(key(i), chat.User{ID: int64(i)}, now)
	}
	if n := len(c.m); n > 4 {
		t.Fatalf("%d entries, bound 4", n)
	}
	if u, ok := c.get(key(19), now); !ok || u.ID != 19 {
		t.Fatal("the newest entry was evicted")
	}
	off := newAuthCache(-1, 4)
	off.put(key(1), chat.User{ID: 1}, now)
	if _, ok := off.get(key(1), now); ok {
		t.Fatal("a disabled cache remembered")
	}
}
