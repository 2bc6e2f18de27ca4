package wal

import (
	"encoding/json"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    LSN
		wantErr bool
	}{
		{"0/0", 0, false},
		{"16/B374D848", 0x16_B374D848, false},
		{"16/b374d848", 0x16_B374D848, false},
		{"FFFFFFFF/FFFFFFFF", Unknown, false},
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
		{"+1/1", 0, true},
		{"e1:0/5", 0, true},
		{"*", 0, true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Parse(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestStringRoundTrip(t *testing.T) {
	for _, l := range []LSN{0, 1, 0x16_B374D848, Unknown, 0x1_00000000, 0xABCDEF} {
		got, err := Parse(l.String())
		if err != nil || got != l {
			t.Errorf("round trip %d via %q = %v, %v", uint64(l), l.String(), got, err)
		}
	}
	for l, want := range map[LSN]string{0: "0/0", 0x16_B374D848: "16/B374D848", 0x3000148: "0/3000148", Unknown: "FFFFFFFF/FFFFFFFF"} {
		if s := l.String(); s != want {
			t.Errorf("String(%d) = %q, want %q", uint64(l), s, want)
		}
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

// refParse is the text form of a pg_lsn, written out: two groups of one to
// eight hexadecimal digits around one slash, the high and low 32 bits.
func refParse(s string) (uint64, bool) {
	var v [2]uint64
	part, digits := 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		var d uint64
		switch {
		case c == '/' && part == 0 && digits > 0:
			part, digits = 1, 0
			continue
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		case 'A' <= c && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if digits++; digits > 8 {
			return 0, false
		}
		v[part] = v[part]<<4 | d
	}
	if part != 1 || digits == 0 {
		return 0, false
	}
	return v[0]<<32 | v[1], true
}

// FuzzParse: Parse accepts exactly what the written-out grammar accepts
// (refParse), with the same value, never panics, and String parses back.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF", "e1:0/5", "", "1/2/3", "+1/1", "0x1/1", "1_0/1", "00000001/0", "000000001/0", " 1/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Parse(s)
		want, ok := refParse(s)
		if (err == nil) != ok || (ok && uint64(l) != want) {
			t.Fatalf("Parse(%q) = %v, %v; the grammar says %x, %v", s, l, err, want, ok)
		}
		if err != nil {
			return
		}
		back, err := Parse(l.String())
		if err != nil || back != l {
			t.Fatalf("Parse(%q) = %v, but Parse(String) = %v, %v", s, l, back, err)
		}
	})
}
