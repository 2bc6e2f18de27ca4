package cache

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// A position is a WAL position as the cache stores it, for write LSNs of
// generations and for read-your-writes tokens:
//
//	[<epoch>:]<HI>/<LO>      e.g. "16/B374D848" or "7311052189873582153:16/B374D848"
//
// HI/LO is PostgreSQL's pg_lsn text form. The optional epoch (e.g. the
// cluster's system identifier) ties a position to one primary's WAL history:
// positions of different epochs are not ordered, and a new epoch replaces an
// old one (after a failover old tokens must not hold readers on the primary).
// Within an epoch, positions only ever move forward. The cache also uses "*"
// internally for "a write of unknown position" (primary-only fills).
type position struct {
	epoch  string
	hi, lo uint32
}

// ErrBadPosition: a token or write LSN is not in the [epoch:]HI/LO form.
var ErrBadPosition = errors.New("malformed WAL position")

const unknownPosition = "*"

func parsePosition(s string) (position, error) {
	var p position
	rest := s
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		p.epoch, rest = s[:i], s[i+1:]
	}
	hi, lo, ok := strings.Cut(rest, "/")
	if !ok || !isHex32(hi) || !isHex32(lo) {
		return p, fmt.Errorf("%w: %q (want [epoch:]HI/LO as in 16/B374D848)", ErrBadPosition, s)
	}
	h, _ := strconv.ParseUint(hi, 16, 32)
	l, _ := strconv.ParseUint(lo, 16, 32)
	p.hi, p.lo = uint32(h), uint32(l)
	return p, nil
}

func isHex32(s string) bool {
	if len(s) == 0 || len(s) > 8 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// supersedes reports whether position a replaces b (b == "": none). It is
// the Go twin of the Lua function newer in scripts.go; both must agree.
func supersedes(a, b string) bool {
	switch {
	case b == "":
		return true
	case b == unknownPosition:
		return false
	case a == unknownPosition:
		return true
	}
	pb, err := parsePosition(b)
	if err != nil {
		return true
	}
	pa, err := parsePosition(a)
	if err != nil {
		return false
	}
	if pa.epoch != pb.epoch {
		return true
	}
	if pa.hi != pb.hi {
		return pa.hi > pb.hi
	}
	return pa.lo > pb.lo
}
