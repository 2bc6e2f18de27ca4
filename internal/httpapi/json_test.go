package httpapi

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/parley-chat/parley/internal/chat"
)

// TestJSONTypeErrorMessages: a field of the wrong JSON type gets a message a
// person can act on, naming the type the field needs.
func TestJSONTypeErrorMessages(t *testing.T) {
	type dst struct {
		Percent *int     `json:"percent"`
		Cache   *bool    `json:"cache"`
		Title   string   `json:"title"`
		IDs     []string `json:"ids"`
	}
	tests := []struct {
		body, want string
	}{
		{`{"percent":50.5}`, `field "percent" must be an integer, not number 50.5`},
		{`{"percent":"50"}`, `field "percent" must be an integer, not string`},
		{`{"cache":"yes"}`, `field "cache" must be a boolean, not string`},
		{`{"title":5}`, `field "title" must be a string, not number`},
		{`{"ids":"x"}`, `field "ids" must be an array, not string`},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			var d dst
			err := decodeJSON(httptest.NewRequest("PUT", "/", strings.NewReader(tt.body)), &d)
			if chat.ErrorCode(err) != chat.EINVALID || chat.ErrorMessage(err) != tt.want {
				t.Fatalf("%s: %v (%s), want %q", tt.body, err, chat.ErrorCode(err), tt.want)
			}
		})
	}
}
