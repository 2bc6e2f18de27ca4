package httpapi

import (
	"net/http/httptest"
	"testing"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/wal"
)

func TestParseReadOptions(t *testing.T) {
	lsn, _ := wal.Parse("16/B374D848")
	tests := []struct {
		name        string
		consistency string
		token       string
		want        chat.ReadOptions
		invalid     bool
	}{
		{name: "none"},
		{name: "strong", consistency: "strong", want: chat.ReadOptions{Strong: true}},
		{name: "strong, any case and spaces", consistency: " Strong ", want: chat.ReadOptions{Strong: true}},
		{name: "unknown level", consistency: "eventual", invalid: true},
		{name: "token", token: "16/B374D848", want: chat.ReadOptions{Token: lsn}},
		{name: "token and strong", consistency: "strong", token: "16/B374D848", want: chat.ReadOptions{Strong: true, Token: lsn}},
		{name: "token without slash", token: "16B374D848", invalid: true},
		{name: "token not hex", token: "16/XYZ", invalid: true},
		{name: "token too long", token: "123456789/0", invalid: true},
		{name: "token with an epoch", token: "7311052189873582153:16/B374D848", invalid: true},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/v1/unread", nil)
		if tt.consistency != "" {
			r.Header.Set("X-Consistency", tt.consistency)
		}
		if tt.token != "" {
			r.Header.Set("X-Consistency-Token", tt.token)
		}
		got, err := parseReadOptions(r)
		if tt.invalid {
			if chat.ErrorCode(err) != chat.EINVALID {
				t.Errorf("%s: err %v, want invalid_argument", tt.name, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: %+v, %v; want %+v", tt.name, got, err, tt.want)
		}
	}
}
