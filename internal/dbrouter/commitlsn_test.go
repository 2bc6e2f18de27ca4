package dbrouter

import (
	"testing"

	"github.com/parley-chat/parley/internal/wal"
)

func TestNormalizeInsertLSN(t *testing.T) {
	g := walGeometry{block: 8192, segment: 16 << 20}
	seg := wal.LSN(16 << 20)
	tests := []struct {
		name string
		in   wal.LSN
		want wal.LSN
	}{
		{"mid page", 0x3000148, 0x3000148},
		{"just after a short page header", 5*8192 + 24, 5 * 8192},
		{"just after a segment's long page header", 3*seg + 40, 3 * seg},
		{"offset 40 in a normal page is a real record end", 5*8192 + 40, 5*8192 + 40},
		{"offset 24 in a segment's first page is inside the long header", 3*seg + 24, 3*seg + 24},
		{"page boundary itself", 5 * 8192, 5 * 8192},
	}
	for _, tt := range tests {
		if got := normalizeInsertLSN(tt.in, g); got != tt.want {
			t.Errorf("%s: normalize(%v) = %v, want %v", tt.name, tt.in, got, tt.want)
		}
	}
	if got := normalizeInsertLSN(5*8192+24, walGeometry{}); got != 5*8192 {
		t.Errorf("zero geometry uses the defaults: got %v", got)
	}
}
