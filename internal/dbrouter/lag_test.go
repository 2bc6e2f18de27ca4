package dbrouter

import (
	"math"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/wal"
)

func TestWALHistoryLag(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	// The primary wrote at 0 s, 1 s and 2 s, then went idle.
	h := newWALHistory(8)
	h.record(100, at(0))
	h.record(100, at(0.5)) // no advance: ignored
	h.record(200, at(1))
	h.record(300, at(2))
	h.record(300, at(2.5))
	tests := []struct {
		name      string
		replay    wal.LSN
		now       float64
		wantBytes int64
		wantSecs  float64
	}{
		{"caught up on an idle primary stays 0", 300, 60, 0, 0},
		{"ahead of the last sample", 350, 3, 0, 0},
		{"behind the last write only", 250, 3, 50, 1},
		{"behind two writes", 150, 3, 150, 2},
		{"exactly at an older sample", 200, 3, 100, 1},
		{"behind everything in the ring", 50, 3, 250, 3},
		{"stuck while the primary is idle keeps growing", 250, 10, 50, 8},
	}
	for _, tt := range tests {
		b, s := h.lag(tt.replay, at(tt.now))
		if b != tt.wantBytes || math.Abs(s-tt.wantSecs) > 1e-9 {
			t.Errorf("%s: lag(%d) = %d B, %.3f s; want %d B, %.3f s", tt.name, tt.replay, b, s, tt.wantBytes, tt.wantSecs)
		}
	}
	if l, ok := h.latest(); !ok || l != 300 {
		t.Errorf("latest = %v, %v", l, ok)
	}
}

func TestWALHistoryEmptyWrapAndReset(t *testing.T) {
	h := newWALHistory(4)
	if b, s := h.lag(10, time.Now()); b != 0 || s != 0 {
		t.Fatalf("empty history: %d, %f", b, s)
	}
	t0 := time.Unix(1000, 0)
	for i := range 10 { // wraps: keeps samples 6..9 (wal.LSN 70..100 at 6..9 s)
		h.record(wal.LSN(10*(i+1)), t0.Add(time.Duration(i)*time.Second))
	}
	if _, s := h.lag(5, t0.Add(20*time.Second)); math.Abs(s-14) > 1e-9 {
		t.Errorf("older than the ring: lag %.3f s, want the oldest sample's age 14", s)
	}
	if _, s := h.lag(85, t0.Add(20*time.Second)); math.Abs(s-12) > 1e-9 {
		t.Errorf("lag %.3f s, want 12 (first sample beyond 85 is wal.LSN 90 at 8 s)", s)
	}
	// A lower position (a new primary after failover) restarts the history.
	h.record(5, t0.Add(30*time.Second))
	if b, s := h.lag(5, t0.Add(40*time.Second)); b != 0 || s != 0 {
		t.Errorf("after reset: %d B %.3f s, want 0", b, s)
	}
}
