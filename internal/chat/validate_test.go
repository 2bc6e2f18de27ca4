package chat

import (
	"bytes"
	"strings"
	"testing"
)

func TestValidateBody(t *testing.T) {
	tests := []struct {
		name string
		body string
		ok   bool
	}{
		{"one character", "a", true},
		{"4000 code points", strings.Repeat("é", 4000), true},
		{"4000 astral code points", strings.Repeat("😀", 4000), true},
		{"surrounding space", "  hi  ", true},
		{"empty", "", false},
		{"only spaces", "   ", false},
		{"only unicode white space", "\u00a0\u2003\t\n", false},
		{"4001 code points", strings.Repeat("é", 4001), false},
		{"invalid UTF-8", "ab\xffcd", false},
		{"NUL", "a\x00b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateBody(tt.body)
			if tt.ok && err != nil {
				t.Fatalf("ValidateBody: %v", err)
			}
			if !tt.ok && ErrorCode(err) != EINVALID {
				t.Fatalf("ValidateBody err = %v, want %s", err, EINVALID)
			}
		})
	}
}

func TestValidateHandle(t *testing.T) {
	for h, ok := range map[string]bool{
		"alice": true, "a": true, "a.b-c_9": true, strings.Repeat("x", 32): true,
		"": false, strings.Repeat("x", 33): false, "Alice": false, "a b": false, "é": false, "a/b": false,
	} {
		if err := ValidateHandle(h); (err == nil) != ok {
			t.Errorf("ValidateHandle(%q) = %v, want ok=%v", h, err, ok)
		}
	}
}

func TestValidateIdempotencyKey(t *testing.T) {
	for k, ok := range map[string]bool{
		"k": true, "abc-123_XYZ ~!": true, strings.Repeat("k", 128): true,
		"": false, strings.Repeat("k", 129): false, "tab\there": false, "é": false, "\x7f": false,
	} {
		if err := ValidateIdempotencyKey(k); (err == nil) != ok {
			t.Errorf("ValidateIdempotencyKey(%q) = %v, want ok=%v", k, err, ok)
		}
	}
}

func TestValidateTitleAndDisplayName(t *testing.T) {
	if err := ValidateTitle(""); err != nil {
		t.Errorf("empty title: %v", err)
	}
	if err := ValidateTitle(strings.Repeat("t", 201)); err == nil {
		t.Error("201-character title accepted")
	}
	if err := ValidateTitle("a\nb"); err == nil {
		t.Error("title with a newline accepted")
	}
	if err := ValidateDisplayName("Alice Ä"); err != nil {
		t.Errorf("display name: %v", err)
	}
	if err := ValidateDisplayName(" "); err == nil {
		t.Error("blank display name accepted")
	}
}

func TestMembers(t *testing.T) {
	got, err := Members(5, []int64{9, 5, 3, 9})
	if err != nil || len(got) != 3 || got[0] != 3 || got[1] != 5 || got[2] != 9 {
		t.Fatalf("Members = %v, %v", got, err)
	}
	if got, err := Members(5, nil); err != nil || len(got) != 1 {
		t.Fatalf("Members(5, nil) = %v, %v", got, err)
	}
	if _, err := Members(5, []int64{0}); ErrorCode(err) != EINVALID {
		t.Fatalf("id 0: %v", err)
	}
	many := make([]int64, 1000)
	for i := range many {
		many[i] = int64(i + 10)
	}
	if _, err := Members(5, many); ErrorCode(err) != EINVALID {
		t.Fatalf("1001 members: %v", err)
	}
	if _, err := Members(10, many); err != nil {
		t.Fatalf("1000 members with the creator among them: %v", err)
	}
}

func TestToken(t *testing.T) {
	tok, hash := NewToken()
	if !strings.HasPrefix(tok, "plt_") || len(hash) != 32 || !bytes.Equal(hash, HashToken(tok)) {
		t.Fatalf("token %q hash %x", tok, hash)
	}
	tok2, _ := NewToken()
	if tok == tok2 {
		t.Fatal("two tokens are equal")
	}
}

func TestErrorCode(t *testing.T) {
	if ErrorCode(nil) != "" || ErrorCode(bytes.ErrTooLarge) != EINTERNAL {
		t.Fatal("ErrorCode of nil / foreign error")
	}
	err := Errorf(ENOTFOUND, "conversation %d not found", 3)
	if ErrorCode(err) != ENOTFOUND || ErrorMessage(err) != "conversation 3 not found" {
		t.Fatalf("%v", err)
	}
	if ErrorMessage(bytes.ErrTooLarge) != "internal error" {
		t.Fatal("internal details leak through ErrorMessage")
	}
}
