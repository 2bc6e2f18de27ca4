package dbrouter

import (
	"sync"
	"time"

	"github.com/parley-chat/parley/internal/wal"
)

// walHistory is a ring of primary WAL positions and the time each was first
// seen, fed by the primary's prober. It answers "since when has the primary
// had WAL beyond this replay position?", which is a replica's lag in seconds.
//
// Unlike now() - pg_last_xact_replay_timestamp(), this is 0 for a caught-up
// replica of an idle primary and does not depend on the replica's clock.
// Samples are recorded only when the position advances, so an idle period
// costs no slots and the ring reaches far back.
type walHistory struct {
	mu      sync.Mutex
	samples []walSample // ring buffer
	next    int         // index of the next write
	n       int         // number of valid samples
}

type walSample struct {
	lsn wal.LSN
	at  time.Time
}

func newWALHistory(size int) *walHistory {
	if size < 2 {
		size = 2
	}
	return &walHistory{samples: make([]walSample, size)}
}

// record notes the primary's position at time at. A position that did not
// advance is ignored (its first sighting is what matters); a position that
// went backwards (a new primary after failover) restarts the history.
func (h *walHistory) record(lsn wal.LSN, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n > 0 {
		last := h.samples[(h.next-1+len(h.samples))%len(h.samples)]
		if lsn == last.lsn {
			return
		}
		if lsn < last.lsn {
			h.n, h.next = 0, 0
		}
	}
	h.samples[h.next] = walSample{lsn: lsn, at: at}
	h.next = (h.next + 1) % len(h.samples)
	if h.n < len(h.samples) {
		h.n++
	}
}

// latest returns the newest primary position (ok false before any sample).
func (h *walHistory) latest() (wal.LSN, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return 0, false
	}
	return h.samples[(h.next-1+len(h.samples))%len(h.samples)].lsn, true
}

// lag returns how far replay trails the primary: bytes behind the newest
// sample, and now minus the time of the oldest sample beyond replay (0 when
// replay is at or past the newest sample). When even the oldest sample in the
// ring is beyond replay, the age of that sample is returned (a lower bound).
func (h *walHistory) lag(replay wal.LSN, now time.Time) (bytes int64, seconds float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return 0, 0
	}
	size := len(h.samples)
	newest := h.samples[(h.next-1+size)%size]
	if replay >= newest.lsn {
		return 0, 0
	}
	bytes = int64(newest.lsn - replay)
	// Walk back from the newest to the oldest sample beyond replay.
	first := newest
	for i := 2; i <= h.n; i++ {
		s := h.samples[(h.next-i+size)%size]
		if s.lsn <= replay {
			break
		}
		first = s
	}
	seconds = now.Sub(first.at).Seconds()
	if seconds < 0 {
		seconds = 0
	}
	return bytes, seconds
}
