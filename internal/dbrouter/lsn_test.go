package dbrouter

import (
	"encoding/json"
	"testing"
)

func TestParseLSN(t *testing.T) {
	tests := []struct {
		in      string
		want    LSN
		wantErr bool
	}{
		{"0/0", 0, false},
		{"16/B374D848", 0x16_B374D848, false},
		{"FFFFFFFF/FFFFFFFF", 0xFFFFFFFF_FFFFFFFF, false},
		{"0/3000148", 0x3000148, false},
		{"a/b", 0xA_0000000B, false},
		{"", 0, true},
		{"16B374D848", 0, true},
		{"/1", 0, true},
		{"1/", 0, true},
		{"1/2/3", 0, true},
		{"100000000/0", 0, true},
		{"x/1", 0, true},
		{"-1/1", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseLSN(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseLSN(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestLSNStringRoundTrip(t *testing.T) {
	for _, l := range []LSN{0, 1, 0x16_B374D848, 0xFFFFFFFF_FFFFFFFF, 0x1_00000000} {
		got, err := ParseLSN(l.String())
		if err != nil || got != l {
			t.Errorf("round trip %d via %q = %v, %v", l, l.String(), got, err)
		}
	}
	if s := LSN(0x16_B374D848).String(); s != "16/B374D848" {
		t.Errorf("String = %q", s)
	}
	b, err := json.Marshal(struct{ T LSN }{0x16_B374D848})
	if err != nil || string(b) != `{"T":"16/B374D848"}` {
		t.Errorf("json = %s, %v", b, err)
	}
	var v struct{ T LSN }
	if err := json.Unmarshal(b, &v); err != nil || v.T != 0x16_B374D848 {
		t.Errorf("unmarshal = %v, %v", v.T, err)
	}
}

func TestNormalizeInsertLSN(t *testing.T) {
	g := walGeometry{block: 8192, segment: 16 << 20}
	seg := LSN(16 << 20)
	tests := []struct {
		name string
		in   LSN
		want LSN
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
