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

// FuzzParse: Parse never panics, accepts only what String gives back
// unchanged (up to case and leading zeros), and String always parses.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF", "e1:0/5", "", "1/2/3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Parse(s)
		if err != nil {
			return
		}
		back, err := Parse(l.String())
		if err != nil || back != l {
			t.Fatalf("Parse(%q) = %v, but Parse(String) = %v, %v", s, l, back, err)
		}
	})
}
