package chat

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func testEncoder(t testing.TB) Encoder {
	return Encoder{Cursors: testCodec(t, "0123456789abcdef0123456789abcdef")}
}

// reference is today's reflection-based body of a history page.
func referencePage(t testing.TB, e Encoder, p MessagePage, dir Direction, given string) []byte {
	t.Helper()
	b, err := EncodeJSON(e.MessagePage(p, dir, given))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkPage(t *testing.T, e Encoder, p MessagePage, dir Direction, given string) {
	t.Helper()
	want := referencePage(t, e, p, dir, given)
	if got := e.EncodeMessagePage(p, dir, given); !bytes.Equal(got, want) {
		t.Fatalf("EncodeMessagePage(dir %d, has_more %v, given %q):\n got %q\nwant %q", dir, p.HasMore, given, got, want)
	}
	// Appending to a non-empty buffer leaves its prefix alone.
	if got := e.AppendMessagePage([]byte("prefix"), p, dir, given); !bytes.Equal(got, append([]byte("prefix"), want...)) {
		t.Fatalf("AppendMessagePage after a prefix:\n got %q\nwant prefix%q", got, want)
	}
}

// Strings that encoding/json escapes, or passes through, in every way.
var jsonStrings = []string{
	"",
	"a message of an ordinary length, about sixty characters long",
	`<script>alert("x")</script> & more`,
	`quote " backslash \ slash /`,
	"\x00\x01\x07\b\t\n\v\f\r\x1b\x1f\x7f",
	"line\u2028separator\u2029paragraph",
	"\ufffd replacement, é, 日本語, 😀, \U0010FFFF",
	"invalid \xff\xfe utf-8 \xc3 truncated \xe2\x82 and \xed\xa0\x80 surrogate",
	"\xf0\x9f\x98", // a truncated 4-byte sequence at the end
	"\xc0\xaf overlong",
	strings.Repeat("x", 4000),
}

func TestAppendJSONStringTable(t *testing.T) {
	for _, s := range jsonStrings {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("appendJSONString(%q) = %s, want %s", s, got, want)
		}
	}
}

func TestAppendTimeTable(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(2026, 11, 26, 3, 10, 18, 123456000, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 999999999, time.UTC), // truncated, not rounded
		time.Date(2026, 1, 2, 23, 59, 59, 1000, time.FixedZone("X", 3600)),
		time.Unix(0, 0),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Now(), // with a monotonic reading
		{},
	} {
		if got, want := string(AppendTime(nil, tm)), FormatTime(tm); got != want {
			t.Errorf("AppendTime(%v) = %q, want %q", tm, got, want)
		}
	}
}

func TestEncodeMessagePageTable(t *testing.T) {
	e := testEncoder(t)
	ts := time.Date(2026, 11, 26, 3, 10, 18, 123456000, time.UTC)
	var msgs []Message
	for i, s := range jsonStrings {
		msgs = append(msgs, Message{ID: int64(1000 + i), ConversationID: 42, SenderID: int64(7 + i%2), Body: s, CreatedAt: ts.Add(-time.Duration(i) * time.Millisecond)})
	}
	cursor := e.Cursors.Encode(MessageCursor, 42, msgs[0].Cursor())
	for _, tc := range []struct {
		name  string
		p     MessagePage
		dir   Direction
		given string
	}{
		{"newest, more", MessagePage{Messages: msgs, HasMore: true}, Newest, ""},
		{"newest, last page", MessagePage{Messages: msgs}, Newest, ""},
		{"newest, nil", MessagePage{}, Newest, ""},
		{"newest, empty", MessagePage{Messages: []Message{}}, Newest, ""},
		{"before, more", MessagePage{Messages: msgs[:3], HasMore: true}, Before, cursor},
		{"before, last page", MessagePage{Messages: msgs[:1]}, Before, cursor},
		{"after, some", MessagePage{Messages: msgs[:2]}, After, cursor},
		{"after, some, more", MessagePage{Messages: msgs[:2], HasMore: true}, After, cursor},
		{"after, none", MessagePage{}, After, cursor},
		{"after, none, odd given", MessagePage{}, After, "<\u2028\xff\"\\>"},
		{"after, none, empty given", MessagePage{}, After, ""},
		{"one message", MessagePage{Messages: []Message{{ID: 1, ConversationID: 1, SenderID: 1, CreatedAt: time.UnixMicro(0)}}}, Newest, ""},
		{"extreme ids", MessagePage{Messages: []Message{{ID: 1<<63 - 1, ConversationID: -1, SenderID: 0, CreatedAt: ts}}}, Newest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) { checkPage(t, e, tc.p, tc.dir, tc.given) })
	}
}

// A page with has_more and no message is impossible (the store reads
// limit+1 rows); both encoders panic on it rather than invent a cursor.
func TestEncodeMessagePageImpossible(t *testing.T) {
	e := testEncoder(t)
	for _, f := range []func(){
		func() { e.MessagePage(MessagePage{HasMore: true}, Newest, "") },
		func() { e.EncodeMessagePage(MessagePage{HasMore: true}, Newest, "") },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f()
		}()
	}
}

// randomString mixes the characters encoding/json treats specially with
// ordinary ones, and random bytes (mostly invalid UTF-8).
func randomString(r *rand.Rand) string {
	special := []string{"<", ">", "&", `"`, `\`, "/", "\u2028", "\u2029", "\ufffd", "é", "日", "😀", "\U0010FFFF", "\x7f", " ", "a", "Z", "0"}
	var b strings.Builder
	for n := r.IntN(80); n > 0; n-- {
		switch r.IntN(6) {
		case 0:
			b.WriteByte(byte(r.IntN(0x20))) // control characters
		case 1:
			b.WriteByte(byte(0x80 + r.IntN(0x80))) // continuation and lead bytes
		case 2:
			b.WriteRune(rune(r.IntN(utf8.MaxRune + 1))) // surrogates become U+FFFD
		default:
			b.WriteString(special[r.IntN(len(special))])
		}
	}
	return b.String()
}

func randomTime(r *rand.Rand) time.Time {
	switch r.IntN(10) {
	case 0:
		return time.Unix(r.Int64N(1<<40)-1<<39, r.Int64N(1e9)).In(time.FixedZone("Z", r.IntN(50000)-25000))
	case 1:
		return time.Date(r.IntN(12000)-1000, time.Month(1+r.IntN(12)), 1+r.IntN(28), 0, 0, 0, 0, time.UTC)
	}
	return time.UnixMicro(1_700_000_000_000_000 + r.Int64N(1e14)).UTC()
}

func randomPage(r *rand.Rand) (MessagePage, Direction, string) {
	conv := r.Int64N(1 << 40)
	var p MessagePage
	switch n := r.IntN(60); {
	case n == 0:
		p.Messages = nil
	default:
		p.Messages = make([]Message, n-1)
	}
	for i := range p.Messages {
		p.Messages[i] = Message{ID: r.Int64(), ConversationID: conv, SenderID: r.Int64N(1 << 20), Body: randomString(r), CreatedAt: randomTime(r)}
	}
	dir := Direction(r.IntN(3))
	p.HasMore = r.IntN(2) == 0 && (len(p.Messages) > 0 || dir == After)
	given := ""
	if dir != Newest {
		given = randomString(r)
	}
	return p, dir, given
}

// TestEncodeMessagePageRandom compares the two encoders on random pages.
func TestEncodeMessagePageRandom(t *testing.T) {
	e := testEncoder(t)
	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, 12))
	for i := range 2000 {
		p, dir, given := randomPage(r)
		want := referencePage(t, e, p, dir, given)
		if got := e.EncodeMessagePage(p, dir, given); !bytes.Equal(got, want) {
			t.Fatalf("seed %d, page %d:\n got %q\nwant %q", seed, i, got, want)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range jsonStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("appendJSONString(%q) = %s, want %s", s, got, want)
		}
	})
}

func FuzzEncodeMessagePage(f *testing.F) {
	f.Add("hello", "", int64(1), int64(2), int64(3), int64(1_700_000_000_000_000), uint8(0), true)
	f.Add("<\u2028\xff>", "<given>", int64(1<<62), int64(5), int64(0), int64(-1), uint8(2), false)
	f.Fuzz(func(t *testing.T, body, given string, id, conv, sender, micros int64, dir uint8, hasMore bool) {
		e := testEncoder(t)
		d := Direction(dir % 3)
		m := Message{ID: id, ConversationID: conv, SenderID: sender, Body: body, CreatedAt: time.UnixMicro(micros)}
		for _, p := range []MessagePage{
			{Messages: []Message{m}, HasMore: hasMore},
			{Messages: []Message{m, m}, HasMore: hasMore},
			{HasMore: hasMore && d == After},
		} {
			want := referencePage(t, e, p, d, given)
			if got := e.EncodeMessagePage(p, d, given); !bytes.Equal(got, want) {
				t.Fatalf("got %q\nwant %q", got, want)
			}
		}
	})
}

// benchPage is an ordinary newest page: 50 messages of about 60 characters.
func benchPage() MessagePage {
	p := MessagePage{HasMore: true}
	ts := time.Date(2026, 11, 26, 3, 10, 18, 123456000, time.UTC)
	for i := range 50 {
		p.Messages = append(p.Messages, Message{ID: int64(900000 - i), ConversationID: 1234, SenderID: int64(77 + i%2),
			Body: "a message of an ordinary length, about sixty characters long", CreatedAt: ts.Add(-time.Duration(i) * time.Second)})
	}
	return p
}

// BenchmarkHistoryEncode is the body of an uncached history page: the
// reflection-based way (MessagePage + encoding/json) against the append
// encoder, with a new buffer and with a pooled one; all sign 50 cursors.
func BenchmarkHistoryEncode(b *testing.B) {
	e := testEncoder(b)
	p := benchPage()
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			body, err := EncodeJSON(e.MessagePage(p, Newest, ""))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.SetBytes(int64(len(e.EncodeMessagePage(p, Newest, ""))))
		}
	})
	b.Run("append_pooled", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf := NewBodyBuffer()
			b.SetBytes(int64(len(e.EncodeMessagePageTo(buf, p, Newest, ""))))
			buf.Release()
		}
	})
}

func TestBodyBuffer(t *testing.T) {
	e := testEncoder(t)
	r := rand.New(rand.NewPCG(3, 4))
	buf := NewBodyBuffer()
	for range 200 {
		p, dir, given := randomPage(r)
		want := referencePage(t, e, p, dir, given)
		got := e.EncodeMessagePageTo(buf, p, dir, given)
		if !bytes.Equal(got, want) {
			t.Fatalf("EncodeMessagePageTo:\n got %q\nwant %q", got, want)
		}
		if !buf.Owns(got) {
			t.Fatal("the buffer does not own what it encoded")
		}
		if buf.Owns(want) || buf.Owns(nil) || buf.Owns(got[:len(got)-1]) {
			t.Fatal("the buffer owns what it did not encode")
		}
		if r.IntN(4) == 0 {
			buf.Release()
			buf = NewBodyBuffer()
		}
	}
	buf.Release()
	var none *BodyBuffer
	none.Release() // a Read without a pooled body
	if none.Owns([]byte("x")) {
		t.Fatal("nil owns")
	}
	Read{Body: []byte("x")}.Release()

	big := &BodyBuffer{b: make([]byte, 10, maxPooledBody+1)}
	big.Release()
	if big.b != nil {
		t.Fatal("an oversized buffer was kept")
	}
}
