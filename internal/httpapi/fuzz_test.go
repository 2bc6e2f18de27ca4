package httpapi

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/wal"
)

// What clients send, fuzzed through the handler on the fake service (no
// network, no database: the package starts no stack).

// fuzzServer is a Server on a fake service, quiet, for many requests.
func fuzzServer() (*Server, *fakeService) {
	fake := newFake()
	quiet := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	return New(Config{Logger: quiet, AccessLog: quiet, Registerer: reg, Gatherer: reg,
		Service: fake, Admin: fake, AdminToken: adminToken}), fake
}

// The endpoints that decode a JSON body, each with a caller allowed to use
// it, and the statuses a body can get there: the write's own on success,
// else 400 or 413 — never 500, whatever the body.
var bodyEndpoints = []struct {
	method, path, token string
}{
	{"POST", "/v1/users", adminToken},
	{"POST", "/v1/conversations", "plt_alice"},
	{"POST", "/v1/conversations/10/messages", "plt_alice"},
	{"POST", "/v1/conversations/10/read", "plt_alice"},
	{"PUT", "/admin/rollouts/message_history", adminToken},
}

// FuzzDecodeJSON sends any body to an endpoint that reads one (each input
// picks one), with a Content-Length or chunked (no length): the answer is a
// success, 400 or 413 with its error code — never a 500 —, 413 exactly when
// the body is over MaxBodyBytes. (The seeds stay small so that the fuzzer
// runs fast; TestWrites sends bodies over the limit, chunked too.)
func FuzzDecodeJSON(f *testing.F) {
	for i, s := range []string{
		`{"body":"hi"}`, `{"handle":"alice_2","display_name":"Alice"}`, `{"title":"t","member_ids":["2"]}`,
		`{"message_id":"5"}`, `{"percent":50,"cache":true,"replica":false}`, `{"percent":50.5}`, `{"percent":1e400}`,
		`{"member_ids":[1]}`, `{"body":"x","extra":1}`, `{"body":"x"} {"body":"y"}`, `null`, `[]`, `""`, ``, `{"body":`,
		"{\"body\":\"ab\xff\xfe\"}", "\xef\xbb\xbf{}", `{"body":"\ud800"}`, `{"BODY":"case"}`, `{"body":"x","body":"y"}`,
	} {
		for ep := range bodyEndpoints {
			f.Add([]byte(s), i%2 == 0, uint8(ep))
		}
	}
	s, fake := fuzzServer()
	f.Fuzz(func(t *testing.T, body []byte, chunked bool, which uint8) {
		ep := bodyEndpoints[int(which)%len(bodyEndpoints)]
		fake.mu.Lock()
		fake.calls = fake.calls[:0]
		fake.mu.Unlock()
		r := httptest.NewRequest(ep.method, ep.path, bytes.NewReader(body))
		if chunked {
			r.ContentLength = -1
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body)))
		}
		r.Header.Set("Authorization", "Bearer "+ep.token)
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		switch code := w.Code; {
		case code == 200 || code == 201:
			if len(body) > MaxBodyBytes {
				t.Fatalf("%s %s: %d for a body of %d bytes (limit %d)", ep.method, ep.path, code, len(body), MaxBodyBytes)
			}
		case code == 400 || code == 413:
			var e errorBody
			if err := decodeStrict(w.Body.Bytes(), &e); err != nil || e.Error.Message == "" ||
				(code == 400) != (e.Error.Code == chat.EINVALID) || (code == 413) != (e.Error.Code == chat.ETOOLARGE) {
				t.Fatalf("%s %s: %d with body %q", ep.method, ep.path, code, w.Body.Bytes())
			}
			if (code == 413) != (len(body) > MaxBodyBytes) {
				t.Fatalf("%s %s: %d for a body of %d bytes (limit %d): %s", ep.method, ep.path, code, len(body), MaxBodyBytes, w.Body.Bytes())
			}
		default:
			t.Fatalf("%s %s (chunked %v) with body %q: %d %s", ep.method, ep.path, chunked, body, code, w.Body.Bytes())
		}
	})
}

// decodeStrict decodes an answer's JSON.
func decodeStrict(b []byte, v any) error {
	r := httptest.NewRequest("POST", "/", bytes.NewReader(b))
	return decodeJSON(r, v)
}

// FuzzParseReadOptions: X-Consistency and X-Consistency-Token with any
// values are accepted exactly when each is absent (blank), or "strong" in
// any case, or a WAL position (wal.Parse, itself fuzzed against the
// grammar); anything else is invalid_argument, and an accepted pair
// means what it says.
func FuzzParseReadOptions(f *testing.F) {
	for _, c := range [][2]string{{"", ""}, {"strong", ""}, {" Strong ", "16/B374D848"}, {"eventual", ""}, {"", "0/XYZ"},
		{"", "7311052189873582153:16/B374D848"}, {"STRONG\t", "\t0/0 "}, {"strong,strong", ""}, {"", "1/2/3"}} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, consistency, token string) {
		r := httptest.NewRequest("GET", "/v1/unread", nil)
		r.Header = http.Header{"X-Consistency": {consistency}, "X-Consistency-Token": {token}}
		got, err := parseReadOptions(r)

		c, tk := strings.TrimSpace(consistency), strings.TrimSpace(token)
		strong := strings.EqualFold(c, "strong")
		lsn, perr := wal.Parse(tk)
		valid := (c == "" || strong) && (tk == "" || perr == nil)
		if !valid {
			if chat.ErrorCode(err) != chat.EINVALID {
				t.Fatalf("X-Consistency %q, X-Consistency-Token %q: %+v, %v; want invalid_argument", consistency, token, got, err)
			}
			return
		}
		want := chat.ReadOptions{Strong: strong}
		if tk != "" {
			want.Token = lsn
		}
		if err != nil || got != want {
			t.Fatalf("X-Consistency %q, X-Consistency-Token %q: %+v, %v; want %+v", consistency, token, got, err, want)
		}
	})
}
