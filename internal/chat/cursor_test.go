package chat

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func testCodec(t testing.TB, key string) *CursorCodec {
	t.Helper()
	c, err := NewCursorCodec([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCursorRoundTrip(t *testing.T) {
	c := testCodec(t, "0123456789abcdef0123456789abcdef")
	ts := time.Date(2026, 11, 26, 3, 10, 18, 123456000, time.UTC)
	for _, cur := range []Cursor{
		{Time: ts, ID: 1},
		{Time: ts, ID: 1<<63 - 1},
		{Time: time.UnixMicro(0), ID: 42},
		{Time: ts.In(time.FixedZone("X", 3600)), ID: 7},
	} {
		s := c.Encode(MessageCursor, 99, cur)
		if len(s) != CursorLen {
			t.Fatalf("len(%q) = %d, want %d", s, len(s), CursorLen)
		}
		got, err := c.Decode(MessageCursor, 99, s)
		if err != nil {
			t.Fatalf("Decode(%q): %v", s, err)
		}
		if !got.Time.Equal(cur.Time) || got.ID != cur.ID || got.Time.Location() != time.UTC {
			t.Fatalf("round trip: got %+v, want %+v", got, cur)
		}
	}
}

func TestCursorRejects(t *testing.T) {
	c := testCodec(t, "0123456789abcdef0123456789abcdef")
	other := testCodec(t, "fedcba9876543210fedcba9876543210")
	ts := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	good := c.Encode(MessageCursor, 5, Cursor{Time: ts, ID: 10})
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	tests := []struct {
		name  string
		codec *CursorCodec
		kind  CursorKind
		scope int64
		s     string
	}{
		{"empty", c, MessageCursor, 5, ""},
		{"garbage", c, MessageCursor, 5, "not-a-cursor"},
		{"garbage of the right length", c, MessageCursor, 5, strings.Repeat("x", CursorLen)},
		{"padding", c, MessageCursor, 5, good + "=="},
		{"too long", c, MessageCursor, 5, good + "AAAA"},
		{"truncated", c, MessageCursor, 5, good[:CursorLen-1]},
		{"invalid base64", c, MessageCursor, 5, good[:CursorLen-1] + "*"},
		{"tampered payload", c, MessageCursor, 5, flip(good, 5)},
		{"tampered mac", c, MessageCursor, 5, flip(good, CursorLen-3)},
		{"foreign conversation", c, MessageCursor, 6, good},
		{"other kind", c, ConversationListCursor, 5, good},
		{"other key", other, MessageCursor, 5, good},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.codec.Decode(tt.kind, tt.scope, tt.s)
			if ErrorCode(err) != EINVALID {
				t.Fatalf("Decode(%q) err = %v, want %s", tt.s, err, EINVALID)
			}
		})
	}
	if _, err := c.Decode(MessageCursor, 5, good); err != nil {
		t.Fatalf("the good cursor: %v", err)
	}
}

func TestCursorKeyTooShort(t *testing.T) {
	if _, err := NewCursorCodec([]byte("short")); err == nil {
		t.Fatal("NewCursorCodec accepted a 5-byte key")
	}
}

// FuzzDecodeCursor: decoding any string never panics, and whatever decodes
// re-encodes to the same string (one encoding per position).
func FuzzDecodeCursor(f *testing.F) {
	c := testCodec(f, "0123456789abcdef0123456789abcdef")
	ts := time.Date(2026, 11, 26, 3, 10, 18, 123456000, time.UTC)
	f.Add(c.Encode(MessageCursor, 1, Cursor{Time: ts, ID: 1}), int64(1), byte(MessageCursor))
	f.Add(c.Encode(ConversationListCursor, 7, Cursor{Time: ts, ID: 9}), int64(7), byte(ConversationListCursor))
	f.Add("", int64(0), byte(0))
	f.Add(strings.Repeat("A", CursorLen), int64(-1), byte(MessageCursor))
	f.Add("\xff\xfe", int64(1<<62), byte('x'))
	f.Fuzz(func(t *testing.T, s string, scope int64, kind byte) {
		cur, err := c.Decode(CursorKind(kind), scope, s)
		if err != nil {
			if ErrorCode(err) != EINVALID {
				t.Fatalf("Decode(%q) error code %q, want %s", s, ErrorCode(err), EINVALID)
			}
			return
		}
		if cur.ID <= 0 {
			t.Fatalf("Decode(%q) gave id %d", s, cur.ID)
		}
		if again := c.Encode(CursorKind(kind), scope, cur); again != s {
			t.Fatalf("re-encode of %q gave %q", s, again)
		}
	})
}

func BenchmarkCursorEncode(b *testing.B) {
	c := testCodec(b, "0123456789abcdef0123456789abcdef")
	cur := Cursor{Time: time.Now(), ID: 123456}
	for b.Loop() {
		_ = c.Encode(MessageCursor, 42, cur)
	}
}

func BenchmarkCursorDecode(b *testing.B) {
	c := testCodec(b, "0123456789abcdef0123456789abcdef")
	s := c.Encode(MessageCursor, 42, Cursor{Time: time.Now(), ID: 123456})
	for b.Loop() {
		if _, err := c.Decode(MessageCursor, 42, s); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCursorWireFormat recomputes cursors from the wire format's definition
// with crypto/hmac directly, so that a faster Encode cannot drift from it.
func TestCursorWireFormat(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	c := testCodec(t, string(key))
	// Made by the codec before it pooled its buffers.
	for _, g := range []struct {
		kind  CursorKind
		scope int64
		cur   Cursor
		want  string
	}{
		{MessageCursor, 1234, Cursor{Time: time.UnixMicro(1764490218123456), ID: 900000}, "AW0ABkTLZKkwwAAAAAAADbugIe9KN-L37jO2vOg-"},
		{ConversationListCursor, -5, Cursor{Time: time.UnixMicro(0), ID: 1}, "AWMAAAAAAAAAAAAAAAAAAAABCNVwVyPqcIHE452m"},
	} {
		if got := c.Encode(g.kind, g.scope, g.cur); got != g.want {
			t.Errorf("Encode(%c, %d, %+v) = %q, want %q", g.kind, g.scope, g.cur, got, g.want)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		kind := []CursorKind{MessageCursor, ConversationListCursor}[r.IntN(2)]
		scope, us, id := r.Int64(), r.Int64N(maxCursorMicros), r.Int64()
		var raw []byte
		raw = append(raw, cursorVersion, byte(kind))
		raw = binary.BigEndian.AppendUint64(raw, uint64(us))
		raw = binary.BigEndian.AppendUint64(raw, uint64(id))
		h := hmac.New(sha256.New, key)
		h.Write(raw)
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(scope)))
		want := base64.RawURLEncoding.EncodeToString(append(raw, h.Sum(nil)[:12]...))
		cur := Cursor{Time: time.UnixMicro(us), ID: id}
		if got := c.Encode(kind, scope, cur); got != want {
			t.Fatalf("Encode(%c, %d, %+v) = %q, want %q", kind, scope, cur, got, want)
		}
		if got := string(c.AppendEncode([]byte("x"), kind, scope, cur)); got != "x"+want {
			t.Fatalf("AppendEncode = %q, want x%q", got, want)
		}
	}
}
