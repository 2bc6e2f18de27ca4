package chat

import (
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// The history page is the hottest response body: an uncached read encodes
// 50 messages. AppendMessagePage writes it without reflection and without a
// MessageJSON per message, byte for byte what EncodeJSON(MessagePage(...))
// writes (encoding/json with its defaults: HTML-safe escaping, U+2028 and
// U+2029 escaped, invalid UTF-8 as U+FFFD, a newline at the end); the tests
// compare the two on random pages.

// EncodeMessagePage is the history page's response body: the same bytes as
// EncodeJSON(e.MessagePage(p, dir, given)).
func (e Encoder) EncodeMessagePage(p MessagePage, dir Direction, given string) []byte {
	return e.AppendMessagePage(make([]byte, 0, pageSizeHint(p, given)), p, dir, given)
}

// pageSizeHint is enough room for an ordinary page: per message the field
// names and punctuation (~90 bytes), three ids (≤ 19 digits each), the time
// (27), the cursor (40) and the body (escaping aside).
func pageSizeHint(p MessagePage, given string) int {
	n := 64 + len(given)
	for i := range p.Messages {
		n += 220 + len(p.Messages[i].Body)
	}
	return n
}

// BodyBuffer is a reusable buffer for a response body that nothing keeps
// after it is written (an uncached read's): NewBodyBuffer takes one from a
// pool, Release puts it back.
type BodyBuffer struct{ b []byte }

// maxPooledBody is the largest buffer that goes back to the pool: a page of
// 100 long messages full of escapes should not stay in memory for ever.
const maxPooledBody = 64 << 10

var bodyBuffers = sync.Pool{New: func() any { return new(BodyBuffer) }}

// NewBodyBuffer returns an empty buffer from the pool.
func NewBodyBuffer() *BodyBuffer { return bodyBuffers.Get().(*BodyBuffer) }

// Release puts b back into the pool (nothing for nil). Whatever b held must
// no longer be used.
func (b *BodyBuffer) Release() {
	if b == nil {
		return
	}
	if cap(b.b) > maxPooledBody {
		b.b = nil
	}
	b.b = b.b[:0]
	bodyBuffers.Put(b)
}

// Owns says whether body is the content of b.
func (b *BodyBuffer) Owns(body []byte) bool {
	return b != nil && len(body) > 0 && len(b.b) == len(body) && &b.b[0] == &body[0]
}

// EncodeMessagePageTo is EncodeMessagePage into buf, replacing what buf
// held: the result is valid until buf is released or used again.
func (e Encoder) EncodeMessagePageTo(buf *BodyBuffer, p MessagePage, dir Direction, given string) []byte {
	if buf.b == nil {
		buf.b = make([]byte, 0, pageSizeHint(p, given))
	}
	buf.b = e.AppendMessagePage(buf.b[:0], p, dir, given)
	return buf.b
}

// AppendMessagePage appends the history page's response body to dst (see
// EncodeMessagePage).
func (e Encoder) AppendMessagePage(dst []byte, p MessagePage, dir Direction, given string) []byte {
	dst = append(dst, `{"messages":[`...)
	last := 0 // where the last message's cursor is in dst
	for i := range p.Messages {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst, last = e.appendMessage(dst, &p.Messages[i])
	}
	dst = append(dst, `],"has_more":`...)
	dst = strconv.AppendBool(dst, p.HasMore)
	dst = append(dst, `,"next_cursor":`...)
	// As MessagePage decides next_cursor. A cursor this codec made is
	// base64url (nothing to escape); the given one is the client's string.
	switch {
	case dir == After && len(p.Messages) == 0:
		dst = appendJSONString(dst, given)
	case dir == After || p.HasMore:
		// MessagePage indexes the last message here, and panics on a page
		// with has_more and no message; so does this.
		_ = p.Messages[len(p.Messages)-1]
		dst = append(dst, '"')
		dst = append(dst, dst[last:last+CursorLen]...)
		dst = append(dst, '"')
	default:
		dst = append(dst, "null"...)
	}
	return append(dst, '}', '\n')
}

// appendMessage appends m's JSON form (Message) to dst, as encoding/json
// writes a MessageJSON; cur is where the cursor's first byte is in the
// result.
func (e Encoder) appendMessage(dst []byte, m *Message) (_ []byte, cur int) {
	dst = append(dst, `{"id":"`...)
	dst = strconv.AppendInt(dst, m.ID, 10)
	dst = append(dst, `","conversation_id":"`...)
	dst = strconv.AppendInt(dst, m.ConversationID, 10)
	dst = append(dst, `","sender_id":"`...)
	dst = strconv.AppendInt(dst, m.SenderID, 10)
	dst = append(dst, `","body":`...)
	dst = appendJSONString(dst, m.Body)
	dst = append(dst, `,"created_at":"`...)
	dst = AppendTime(dst, m.CreatedAt)
	dst = append(dst, `","cursor":"`...)
	cur = len(dst)
	dst = e.Cursors.AppendEncode(dst, MessageCursor, m.ConversationID, m.Cursor())
	return append(dst, `"}`...), cur
}

// AppendTime appends t's wire form (FormatTime) to dst.
func AppendTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(dst, timeLayout)
	}
	hour, min, sec := t.Clock()
	us := t.Nanosecond() / 1000 // truncated, as Format does
	var b [27]byte              // 2006-01-02T15:04:05.000000Z
	put := func(i, v, width int) {
		for j := i + width - 1; j >= i; j-- {
			b[j] = byte('0' + v%10)
			v /= 10
		}
	}
	put(0, year, 4)
	b[4] = '-'
	put(5, int(month), 2)
	b[7] = '-'
	put(8, day, 2)
	b[10] = 'T'
	put(11, hour, 2)
	b[13] = ':'
	put(14, min, 2)
	b[16] = ':'
	put(17, sec, 2)
	b[19] = '.'
	put(20, us, 6)
	b[26] = 'Z'
	return append(dst, b[:]...)
}

// jsonSafe[b] is whether encoding/json (escaping HTML) writes the ASCII
// byte b as itself in a string: not a control character, not " or \, not <,
// > or &.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		switch b {
		case '"', '\\', '<', '>', '&':
		default:
			t[b] = true
		}
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string exactly as encoding/json's
// Encoder (with its default SetEscapeHTML(true)) writes a Go string.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if jsonSafe[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				// Other control characters, and <, > and &.
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
