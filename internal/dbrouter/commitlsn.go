package dbrouter

import "github.com/parley-chat/parley/internal/wal"

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
func normalizeInsertLSN(l wal.LSN, g walGeometry) wal.LSN {
	if g.block == 0 || g.segment == 0 {
		g = defaultGeometry
	}
	v := uint64(l)
	switch {
	case v%g.segment == xlogLongPageHeader:
		return wal.LSN(v - xlogLongPageHeader)
	case v%g.block == xlogShortPageHeader && v%g.segment != xlogShortPageHeader:
		return wal.LSN(v - xlogShortPageHeader)
	}
	return l
}
