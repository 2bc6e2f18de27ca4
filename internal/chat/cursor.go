package chat

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash"
	"sync"
	"time"
)

// Cursor is a keyset position: a microsecond timestamp and an id that breaks
// ties. Messages are ordered by (CreatedAt, ID) within a conversation,
// conversation lists by (activity time, conversation ID).
type Cursor struct {
	Time time.Time
	ID   int64
}

// CursorKind says what a cursor points into; a cursor of one kind is
// rejected where another is expected.
type CursorKind byte

const (
	// MessageCursor points at a message of one conversation (scope: the
	// conversation id).
	MessageCursor CursorKind = 'm'
	// ConversationListCursor points into one user's conversation list
	// (scope: the user id).
	ConversationListCursor CursorKind = 'c'
)

// Wire format, before base64url (no padding): version (1 byte), kind (1),
// time in Unix microseconds (8, big endian), id (8), then the first 12 bytes
// of HMAC-SHA256(key, those 18 bytes || scope as 8 bytes big endian). The
// scope is authenticated but not carried, so a cursor of another
// conversation (or user) fails the MAC check.
const (
	cursorVersion    = 1
	cursorPayloadLen = 18
	cursorMACLen     = 12
	cursorRawLen     = cursorPayloadLen + cursorMACLen
	// CursorLen is the length of every encoded cursor.
	CursorLen = (cursorRawLen*8 + 5) / 6

	minCursorMicros = 0                  // 1970-01-01
	maxCursorMicros = 253402300799999999 // 9999-12-31T23:59:59.999999Z
)

var cursorEncoding = base64.RawURLEncoding.Strict()

// MinCursorKeyLen is the shortest HMAC key NewCursorCodec accepts.
const MinCursorKeyLen = 16

// CursorCodec encodes and decodes opaque, tamper-evident cursors. It is safe
// for concurrent use. Every instance of the service must use the same key.
type CursorCodec struct {
	macs sync.Pool // of *macState
}

// macState is an HMAC-SHA256 under the codec's key with room for its input
// and output: slices of a pooled value do not escape to the heap per call
// (a history page signs 50 cursors).
type macState struct {
	h   hash.Hash
	in  [cursorPayloadLen + 8]byte
	sum [sha256.Size]byte
}

// NewCursorCodec returns a codec keyed with key (at least 16 bytes).
func NewCursorCodec(key []byte) (*CursorCodec, error) {
	if len(key) < MinCursorKeyLen {
		return nil, errors.New("chat: cursor key must be at least 16 bytes")
	}
	k := append([]byte(nil), key...)
	c := &CursorCodec{}
	c.macs.New = func() any { return &macState{h: hmac.New(sha256.New, k)} }
	return c, nil
}

// mac appends the first cursorMACLen bytes of HMAC-SHA256(key, payload ||
// scope as 8 bytes big endian) to dst.
func (c *CursorCodec) mac(dst, payload []byte, scope int64) []byte {
	m := c.macs.Get().(*macState)
	n := copy(m.in[:], payload)
	binary.BigEndian.PutUint64(m.in[n:], uint64(scope))
	m.h.Reset()
	m.h.Write(m.in[:n+8])
	dst = append(dst, m.h.Sum(m.sum[:0])[:cursorMACLen]...)
	c.macs.Put(m)
	return dst
}

// Encode returns the opaque form of cur, bound to kind and scope.
func (c *CursorCodec) Encode(kind CursorKind, scope int64, cur Cursor) string {
	var b [CursorLen]byte
	return string(c.AppendEncode(b[:0], kind, scope, cur))
}

// AppendEncode appends Encode's result (CursorLen bytes) to dst.
func (c *CursorCodec) AppendEncode(dst []byte, kind CursorKind, scope int64, cur Cursor) []byte {
	var raw [cursorRawLen]byte
	raw[0] = cursorVersion
	raw[1] = byte(kind)
	binary.BigEndian.PutUint64(raw[2:10], uint64(cur.Time.UnixMicro()))
	binary.BigEndian.PutUint64(raw[10:18], uint64(cur.ID))
	c.mac(raw[:cursorPayloadLen], raw[:cursorPayloadLen], scope)
	return cursorEncoding.AppendEncode(dst, raw[:])
}

// errBadCursor is the one answer to every malformed, tampered or foreign
// cursor: which check failed is nobody's business.
func errBadCursor() error {
	return Errorf(EINVALID, "the cursor is not valid here: pass back a cursor this endpoint returned for this list")
}

// Decode parses s, which must have been made by Encode with the same key,
// kind and scope. Every failure is an EINVALID *Error; it never panics.
func (c *CursorCodec) Decode(kind CursorKind, scope int64, s string) (Cursor, error) {
	if len(s) != CursorLen {
		return Cursor{}, errBadCursor()
	}
	var raw [cursorRawLen]byte
	n, err := cursorEncoding.Decode(raw[:], []byte(s))
	if err != nil || n != cursorRawLen {
		return Cursor{}, errBadCursor()
	}
	var want [cursorMACLen]byte
	if !hmac.Equal(c.mac(want[:0], raw[:cursorPayloadLen], scope), raw[cursorPayloadLen:]) {
		return Cursor{}, errBadCursor()
	}
	if raw[0] != cursorVersion || raw[1] != byte(kind) {
		return Cursor{}, errBadCursor()
	}
	us := int64(binary.BigEndian.Uint64(raw[2:10]))
	id := int64(binary.BigEndian.Uint64(raw[10:18]))
	if us < minCursorMicros || us > maxCursorMicros || id <= 0 {
		return Cursor{}, errBadCursor()
	}
	return Cursor{Time: time.UnixMicro(us).UTC(), ID: id}, nil
}
