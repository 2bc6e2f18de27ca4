package dbrouter

import (
	"fmt"
	"strconv"
	"strings"
)

// LSN is a PostgreSQL write-ahead-log position (the pg_lsn type): a byte
// offset into the WAL stream. Its text form is PostgreSQL's, two hex halves
// "16/B374D848". The zero LSN means "no position" (no token).
type LSN uint64

// ParseLSN parses PostgreSQL's text form of a pg_lsn ("16/B374D848").
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("parse LSN %q: want the form 16/B374D848", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse LSN %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse LSN %q: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

// String returns PostgreSQL's text form of the LSN ("16/B374D848").
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xFFFFFFFF)
}

// MarshalText implements encoding.TextMarshaler (JSON, headers).
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// WAL page geometry, needed to compare an insert position with a replay
// position (see normalizeInsertLSN). These are PostgreSQL's defaults; the
// primary prober reads the server's actual values.
const (
	defaultWALBlockSize   = 8192
	defaultWALSegmentSize = 16 << 20
	xlogShortPageHeader   = 24 // SizeOfXLogShortPHD (MAXALIGNed)
	xlogLongPageHeader    = 40 // SizeOfXLogLongPHD, first page of a segment
)

// walGeometry is the primary's WAL block and segment size in bytes.
type walGeometry struct {
	block, segment uint64
}

var defaultGeometry = walGeometry{block: defaultWALBlockSize, segment: defaultWALSegmentSize}

// normalizeInsertLSN maps a pg_current_wal_insert_lsn() value to the
// end-of-record position a replica reports after replaying up to it.
//
// When the insert position sits exactly at a page boundary, PostgreSQL
// reports it as pointing just past the next page's header, while a replica
// that replayed everything reports the boundary itself. Without this, an idle
// primary that stopped on a page boundary would look 24 (or 40) bytes ahead of
// a fully caught-up replica forever, and its lag in seconds would grow without
// bound. No record can end inside a page header, so the mapping is exact.
func normalizeInsertLSN(l LSN, g walGeometry) LSN {
	if g.block == 0 || g.segment == 0 {
		g = defaultGeometry
	}
	v := uint64(l)
	switch {
	case v%g.segment == xlogLongPageHeader:
		return LSN(v - xlogLongPageHeader)
	case v%g.block == xlogShortPageHeader && v%g.segment != xlogShortPageHeader:
		return LSN(v - xlogShortPageHeader)
	}
	return l
}
