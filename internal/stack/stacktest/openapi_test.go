package stacktest

import (
	"net/http"
	"strings"
	"testing"
)

// TestContract: the checks the Client runs on every exchange catch what
// they must — each case is an exchange and the problem it must report
// ("" for none).
func TestContract(t *testing.T) {
	spec, err := loadContract()
	if err != nil {
		t.Fatal(err)
	}
	me := `{"id":"1","handle":"alice","display_name":"Alice"}`
	hdr := func(kv ...string) http.Header {
		h := http.Header{"X-Request-Id": {"r1"}, "Content-Type": {"application/json"}}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	for _, tc := range []struct {
		name         string
		method, path string
		body         string
		invalid      bool
		reply        Reply
		want         string // a fragment of the error, "" for none
	}{
		{"a valid read", "GET", "/v1/me", "", false, Reply{200, hdr("X-Read-Source", "replica"), []byte(me)}, ""},
		{"a read without X-Read-Source", "GET", "/v1/me", "", false, Reply{200, hdr(), []byte(me)}, `"X-Read-Source" missing`},
		{"an answer without X-Request-Id", "GET", "/healthz", "", false, Reply{200, http.Header{}, []byte(`{"status":"ok"}`)}, "no X-Request-Id"},
		{"an undocumented status", "GET", "/v1/me", "", false, Reply{418, hdr("X-Read-Source", "primary"), []byte(`{"error":{"code":"teapot","message":"x"}}`)}, "status 418 is not documented"},
		{"an undocumented field", "GET", "/v1/me", "", false, Reply{200, hdr("X-Read-Source", "cache"), []byte(`{"id":"1","handle":"a","display_name":"A","admin":true}`)}, "'admin' not allowed"},
		{"a 503 without Retry-After", "POST", "/v1/users", `{"handle":"bob"}`, false, Reply{503, hdr(), []byte(`{"error":{"code":"unavailable","message":"retry"}}`)}, `"Retry-After" missing`},
		{"the wrong code for a status", "POST", "/v1/users", `{"handle":"bob"}`, false, Reply{409, hdr(), []byte(`{"error":{"code":"not_found","message":"x"}}`)}, "value must be 'conflict'"},
		{"an invalid request not marked", "GET", "/v1/conversations?limit=0", "", false, Reply{}, "breaks api/openapi.yaml"},
		{"a valid request marked invalid", "GET", "/v1/conversations?limit=5", "", true, Reply{}, "accepts it"},
		{"an undocumented path not marked", "GET", "/v1/nothing", "", false, Reply{}, "not in api/openapi.yaml"},
		{"an undocumented path marked, an error answer", "GET", "/v1/nothing", "", true, Reply{404, hdr(), []byte(`{"error":{"code":"not_found","message":"no such endpoint"}}`)}, ""},
		{"an undocumented path marked, another answer", "GET", "/v1/nothing", "", true, Reply{200, hdr(), []byte(`{"ok":true}`)}, "not an error body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, "http://127.0.0.1:1"+tc.path, strings.NewReader(tc.body))
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			x, err := spec.checkRequest(req, []byte(tc.body), tc.invalid)
			if err == nil && tc.reply.Status != 0 {
				err = spec.checkResponse(x, tc.reply)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected problem: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("problem %v, want one with %q", err, tc.want)
			}
		})
	}
}

// BenchmarkContract is the cost the checks add to one exchange: a send and
// its answer, and a history page of 50 messages.
func BenchmarkContract(b *testing.B) {
	spec, err := loadContract()
	if err != nil {
		b.Fatal(err)
	}
	msg := `{"id":"12","conversation_id":"3","sender_id":"1","body":"hello there","created_at":"2026-11-26T03:10:18.123456Z","cursor":"AW0ABmF1krm93gAAAAAAAAAB81ACg8v8mq42VdJ8"}`
	page := `{"messages":[` + strings.TrimSuffix(strings.Repeat(msg+",", 50), ",") + `],"has_more":true,"next_cursor":"AW0ABmF1krm93gAAAAAAAAAB81ACg8v8mq42VdJ8"}`
	h := http.Header{"X-Request-Id": {"r1"}, "Content-Type": {"application/json"}, "X-Consistency-Token": {"16/B374D848"}, "X-Read-Source": {"replica"}}
	for _, bc := range []struct {
		name, method, path, body, answer string
		status                           int
	}{
		{"send", "POST", "/v1/conversations/3/messages", `{"body":"hello there"}`, msg, 201},
		{"page of 50", "GET", "/v1/conversations/3/messages?limit=50", "", page, 200},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				req, _ := http.NewRequest(bc.method, "http://127.0.0.1:1"+bc.path, strings.NewReader(bc.body))
				if bc.body != "" {
					req.Header.Set("Content-Type", "application/json")
				}
				x, err := spec.checkRequest(req, []byte(bc.body), false)
				if err == nil {
					err = spec.checkResponse(x, Reply{bc.status, h, []byte(bc.answer)})
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
