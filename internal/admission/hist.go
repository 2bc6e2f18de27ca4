package admission

import (
	"math/bits"
	"time"
)

// latencyHist is a log-linear histogram of service times in microseconds:
// exact below 16 µs, then 8 buckets per power of two (at most 12.5 % wide),
// up to about 100 s. Adding is O(1) and allocates nothing; a window's p90 is
// read from it once per window.
type latencyHist struct {
	counts [histBuckets]uint32
	n      int
}

const (
	histLinear  = 16
	histBuckets = histLinear + 23*8 // up to 2^27 µs ≈ 134 s
)

func bucketOf(d time.Duration) int {
	us := d.Microseconds()
	if us < histLinear {
		return int(max(us, 0))
	}
	e := bits.Len64(uint64(us)) - 1 // ≥ 4
	b := histLinear + (e-4)*8 + int((us>>(e-3))&7)
	return min(b, histBuckets-1)
}

// bucketValue is a value within bucket b: its middle.
func bucketValue(b int) time.Duration {
	if b < histLinear {
		return time.Duration(b) * time.Microsecond
	}
	e := (b-histLinear)/8 + 4
	sub := int64((b - histLinear) % 8)
	lo := (8 + sub) << (e - 3)
	width := int64(1) << (e - 3)
	return time.Duration(lo+width/2) * time.Microsecond
}

func (h *latencyHist) add(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
}

func (h *latencyHist) reset() {
	if h.n > 0 {
		h.counts = [histBuckets]uint32{}
		h.n = 0
	}
}

// quantile is the q-quantile (0–1) of the values added, 0 when empty.
func (h *latencyHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int(q*float64(h.n) + 0.999999)
	rank = min(max(rank, 1), h.n)
	seen := 0
	for b, c := range h.counts {
		seen += int(c)
		if seen >= rank {
			return bucketValue(b)
		}
	}
	return bucketValue(histBuckets - 1)
}
