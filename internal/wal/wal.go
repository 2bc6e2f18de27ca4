// Package wal names a position in PostgreSQL's write-ahead log (the pg_lsn
// type). It is Parley's one type for it, whatever the position is used for:
// the read-your-writes token of a write (X-Consistency-Token), a replica's
// replay position, the write position a cache generation records, the
// position a fill must have been read at.
//
// Positions only grow on one primary. The zero LSN means "no position" (no
// token); Unknown is the position of a write whose position could not be
// read: it is later than any real position, so no replica ever reaches it
// and reads held to it go to the primary.
package wal

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// LSN is a byte offset into the WAL stream. Its text form is PostgreSQL's:
// two hexadecimal halves, "16/B374D848".
type LSN uint64

// Unknown stands for a position that could not be read (see the package doc).
const Unknown LSN = math.MaxUint64

// Parse reads PostgreSQL's text form of a pg_lsn ("16/B374D848").
func Parse(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("parse WAL position %q: want the form 16/B374D848", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse WAL position %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse WAL position %q: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

// String is PostgreSQL's text form ("16/B374D848").
func (l LSN) String() string { return string(l.AppendText(nil)) }

// AppendText appends the text form to b.
func (l LSN) AppendText(b []byte) []byte {
	b = appendHex(b, uint32(l>>32))
	b = append(b, '/')
	return appendHex(b, uint32(l))
}

// appendHex appends v in upper-case hexadecimal without leading zeros, as
// PostgreSQL prints the halves of a pg_lsn.
func appendHex(b []byte, v uint32) []byte {
	const digits = "0123456789ABCDEF"
	var buf [8]byte
	i := len(buf)
	for {
		i--
		buf[i] = digits[v&0xF]
		v >>= 4
		if v == 0 {
			break
		}
	}
	return append(b, buf[i:]...)
}

// MarshalText implements encoding.TextMarshaler (JSON, headers).
func (l LSN) MarshalText() ([]byte, error) { return l.AppendText(nil), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
