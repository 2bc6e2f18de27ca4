package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name     string
		raw      string
		method   string
		status   int
		close    bool
		body     string
		err      error
		leftover string // what must remain unread (the next pipelined response)
		wantBody bool
	}{
		{name: "content-length", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT", status: 200, body: "hello", leftover: "NEXT", wantBody: true},
		{name: "content-length discarded", raw: "HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhelloNEXT", status: 201, leftover: "NEXT"},
		{name: "chunked", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT", status: 200, body: "hello world", leftover: "NEXT", wantBody: true},
		{name: "chunked with trailers", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT", status: 200, body: "abc", leftover: "NEXT", wantBody: true},
		{name: "chunked discarded", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\nNEXT", status: 200, leftover: "NEXT"},
		{name: "connection close", raw: "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno", status: 503, close: true, body: "no", wantBody: true},
		{name: "http/1.0 closes", raw: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nokNEXT", status: 200, close: true, leftover: "NEXT"},
		{name: "http/1.0 keep-alive", raw: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nokNEXT", status: 200, leftover: "NEXT"},
		{name: "no length reads to EOF", raw: "HTTP/1.1 200 OK\r\n\r\nall of it", status: 200, close: true, body: "all of it", wantBody: true},
		{name: "204 has no body", raw: "HTTP/1.1 204 No Content\r\n\r\nNEXT", status: 204, leftover: "NEXT"},
		{name: "HEAD has no body", raw: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nNEXT", method: "HEAD", status: 200, leftover: "NEXT"},
		{name: "100 continue skipped", raw: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxNEXT", status: 200, body: "x", leftover: "NEXT", wantBody: true},
		// Found by FuzzReadResponse against net/http:
		{name: "http/1.0 ignores Transfer-Encoding", raw: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello", status: 200, close: true, body: "5\r\nhello", wantBody: true},
		{name: "spaces before the status code", raw: "HTTP/1.1  204 No Content\r\n\r\nNEXT", status: 204, leftover: "NEXT"},
		{name: "empty: no response", raw: "", err: errNoResponse},
		{name: "garbage", raw: "SMTP ready\r\n", err: errProtocol},
		{name: "bad length", raw: "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", err: errProtocol},
		{name: "truncated body", raw: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", err: io.ErrUnexpectedEOF},
		{name: "truncated chunk", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", err: io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tc.raw), 64)
			method := tc.method
			if method == "" {
				method = "GET"
			}
			var keep *[]byte
			if tc.wantBody {
				keep = new([]byte)
			}
			resp, err := readResponse(br, method, keep)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if resp.status != tc.status || resp.close != tc.close {
				t.Errorf("status, close = %d, %v; want %d, %v", resp.status, resp.close, tc.status, tc.close)
			}
			if tc.wantBody && string(resp.body) != tc.body {
				t.Errorf("body = %q, want %q", resp.body, tc.body)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tc.leftover {
				t.Errorf("left unread %q, want %q", rest, tc.leftover)
			}
		})
	}
}

func TestWriteRequest(t *testing.T) {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	writeRequest(w, "example:80", &Request{Method: "POST", Path: "/v1/x?y=1", Token: "tok", IdemKey: "k1",
		Header: []HeaderField{{"X-Consistency", "strong"}}, Body: []byte(`{"a":1}`)})
	writeRequest(w, "example:80", &Request{Method: "GET", Path: "/healthz"})
	w.Flush()
	want := "POST /v1/x?y=1 HTTP/1.1\r\nHost: example:80\r\nUser-Agent: parley-load/1\r\nAuthorization: Bearer tok\r\n" +
		"Idempotency-Key: k1\r\nX-Consistency: strong\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}" +
		"GET /healthz HTTP/1.1\r\nHost: example:80\r\nUser-Agent: parley-load/1\r\n\r\n"
	if buf.String() != want {
		t.Errorf("wrote\n%q\nwant\n%q", buf.String(), want)
	}
}

func TestNextCursor(t *testing.T) {
	tests := []struct {
		body string
		want string
		ok   bool
	}{
		{`{"messages":[{"cursor":"a"}],"has_more":true,"next_cursor":"abc"}`, "abc", true},
		{`{"messages":[],"has_more":false,"next_cursor":null}`, "", true},
		{`{"next_cursor" : "a\/b\u0041"}`, "a/bA", true},
		{"{\n  \"next_cursor\": \"x\"\n}", "x", true},
		{`{"messages":[]}`, "", false},
		{`{"next_cursor":"unterminated`, "", false},
	}
	for _, tc := range tests {
		got, ok := nextCursor([]byte(tc.body))
		if got != tc.want || ok != tc.ok {
			t.Errorf("nextCursor(%s) = %q, %v; want %q, %v", tc.body, got, ok, tc.want, tc.ok)
		}
	}
}
