package loadgen

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"
)

// What the load generator reads from servers (HTTP/1.1 responses, the
// cursor in a page) and from its users (scenario files, thresholds,
// stages). The package starts no stack: these run at full speed under
// `make fuzz`.

// FuzzReadResponse compares readResponse with net/http's reader on the same
// bytes: whenever net/http reads a complete response (following 1xx ones,
// as a client does), readResponse must read the same status, body and
// connection fate and stop at the same byte — the next pipelined response
// starts there. Where net/http refuses, readResponse may be more lenient,
// but must not panic or read past what it was given.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT",
		"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
		"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nokNEXT",
		"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nokNEXT",
		"HTTP/1.1 200 OK\r\n\r\nall of it",
		"HTTP/1.1 204 No Content\r\n\r\nNEXT",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxNEXT",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\nNEXT",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
		"SMTP ready\r\n",
		"",
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nNEXT"), true)
	f.Fuzz(func(t *testing.T, raw []byte, head bool) {
		method := "GET"
		if head {
			method = "HEAD"
		}
		// Ours, with a small buffer (lines longer than it are an error).
		br := bufio.NewReaderSize(bytes.NewReader(raw), 4096)
		var keep []byte
		got, err := readResponse(br, method, &keep)
		rest, _ := io.ReadAll(br)
		if len(rest) > len(raw) || !bytes.HasSuffix(raw, rest) {
			t.Fatalf("left %q of %q", rest, raw)
		}

		// net/http's, as its client reads a response: 1xx skipped.
		sr := bufio.NewReaderSize(bytes.NewReader(raw), 4096)
		var want *http.Response
		for {
			r, err := http.ReadResponse(sr, &http.Request{Method: method})
			if err != nil || r.ProtoMajor != 1 || r.ProtoMinor > 1 || r.StatusCode < 100 || r.StatusCode > 599 {
				return // net/http refuses, or not an HTTP/1.x answer a server sends: no reference
			}
			if r.StatusCode >= 200 {
				want = r
				break
			}
		}
		wantBody, berr := io.ReadAll(want.Body)
		if berr != nil {
			return // a body net/http cannot read completely either
		}
		wantRest, _ := io.ReadAll(sr)
		if err != nil {
			t.Fatalf("net/http reads status %d, body %q (left %q); readResponse: %v", want.StatusCode, wantBody, wantRest, err)
		}
		if got.status != want.StatusCode || got.close != want.Close || !bytes.Equal(got.body, wantBody) || !bytes.Equal(rest, wantRest) {
			t.Fatalf("readResponse: status %d close %v body %q left %q\nnet/http:     status %d close %v body %q left %q",
				got.status, got.close, got.body, rest, want.StatusCode, want.Close, wantBody, wantRest)
		}
	})
}

// FuzzNextCursor compares the cursor scanner with encoding/json: on a
// history page as the API writes it (messages with any text, a cursor or
// null, compact or indented) it must find exactly the page's next_cursor;
// on any valid JSON object in UTF-8 with one "next_cursor" key at the top,
// the value encoding/json decodes; on anything else it must not panic.
func FuzzNextCursor(f *testing.F) {
	f.Add("hello", "AW0ABmF2tEoaoAAAAAAAAAADwRug6AdKrJzsfjtf", false, false, []byte(`{"messages":[],"has_more":false,"next_cursor":null}`))
	f.Add(`she said "next_cursor": "x"`, `a/b\u0041`, true, true, []byte(`{"next_cursor" : "a\/b\u0041"}`))
	f.Add("</script>", "", false, true, []byte("{\n  \"next_cursor\": \"x\"\n}"))
	f.Fuzz(func(t *testing.T, body, cursor string, null, indent bool, raw []byte) {
		type msg struct {
			ID     string `json:"id"`
			Body   string `json:"body"`
			Cursor string `json:"cursor"`
		}
		page := struct {
			Messages   []msg   `json:"messages"`
			HasMore    bool    `json:"has_more"`
			NextCursor *string `json:"next_cursor"`
		}{Messages: []msg{{"1", body, cursor}, {"2", cursor, body}}, HasMore: !null}
		if !null {
			page.NextCursor = &cursor
		}
		b, err := json.Marshal(page)
		if err != nil {
			t.Fatal(err)
		}
		if indent {
			var ib bytes.Buffer
			if err := json.Indent(&ib, b, "", "  "); err != nil {
				t.Fatal(err)
			}
			b = ib.Bytes()
		}
		want := ""
		if !null {
			// What a client gets back: json turns invalid UTF-8 into U+FFFD.
			var back struct {
				NextCursor string `json:"next_cursor"`
			}
			_ = json.Unmarshal(b, &back)
			want = back.NextCursor
		}
		if got, ok := nextCursor(b); !ok || got != want {
			t.Fatalf("nextCursor(%s) = %q, %v; want %q", b, got, ok, want)
		}

		got, ok := nextCursor(raw) // must not panic
		// The API writes valid UTF-8 (encoding/json would turn invalid
		// bytes into U+FFFD; the scanner keeps a cursor's bytes as they are).
		var top map[string]json.RawMessage
		if !utf8.Valid(raw) || json.Unmarshal(raw, &top) != nil || bytes.Count(raw, []byte(`"next_cursor"`)) != 1 {
			return
		}
		v, found := top["next_cursor"]
		if !found {
			return // nested, or an escaped key ("next\u005fcursor"): not the API's form
		}
		var c *string
		switch {
		case json.Unmarshal(v, &c) != nil: // a number, an object, ...
			if ok {
				t.Fatalf("nextCursor(%s) = %q, true; but next_cursor is %s", raw, got, v)
			}
		case c == nil:
			if !ok || got != "" {
				t.Fatalf("nextCursor(%s) = %q, %v; want null: \"\", true", raw, got, ok)
			}
		case !ok || got != *c:
			t.Fatalf("nextCursor(%s) = %q, %v; encoding/json: %q", raw, got, ok, *c)
		}
	})
}

// FuzzParseThreshold: a threshold either fails to parse or is a real gate
// — a known metric and operator, a finite value not below zero — and its
// canonical form parses back to the same gate.
func FuzzParseThreshold(f *testing.F) {
	for _, s := range []string{"history:p95<350ms", "p99 <= 1.5s", "max<800us", "p50<20", "p99.9<1s", "error_rate<1%",
		"send:error_rate<=0.005", "rps>100", "rps>=150/s", "errors<1", "p95", "p95<fast", ":p95<3ms", "p95<NaN", "rps>-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		th, err := ParseThreshold(expr)
		if err != nil {
			return
		}
		switch th.Op {
		case "<", "<=", ">", ">=":
		default:
			t.Fatalf("ParseThreshold(%q): operator %q", expr, th.Op)
		}
		if latencyMetrics[th.Metric] == nil && th.Metric != "error_rate" && th.Metric != "rps" && th.Metric != "errors" && th.Metric != "requests" {
			t.Fatalf("ParseThreshold(%q): metric %q", expr, th.Metric)
		}
		if math.IsNaN(th.Value) || math.IsInf(th.Value, 0) || th.Value < 0 {
			t.Fatalf("ParseThreshold(%q): value %v is no gate", expr, th.Value)
		}
		canon := th.Metric + th.Op + strconv.FormatFloat(th.Value, 'g', -1, 64)
		if th.Scope != "" {
			canon = th.Scope + ":" + canon
		}
		back, err := ParseThreshold(canon)
		if err != nil || back.Scope != th.Scope || back.Metric != th.Metric || back.Op != th.Op || back.Value != th.Value {
			t.Fatalf("ParseThreshold(%q) = %+v; its canonical form %q parses as %+v, %v", expr, th, canon, back, err)
		}
	})
}

// FuzzParseStage: a --stage value either fails to parse or gives a stage a
// profile can be made of (a duration not below zero, connections and rate
// not below zero or -1 for "keep", a finite rate), whose canonical form
// parses back to it; a profile of it followed by a one-second stage is
// finite everywhere.
func FuzzParseStage(f *testing.F) {
	for _, s := range []string{"2m,conns=5000,rate=200", "30s", "1m, rate=400/s", "1m,c=10", "soon", "1m,conns=-3", "1m,speed=3", "1m,rate", "1s,rate=NaN", "-1s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, err := ParseStage(s)
		if err != nil {
			return
		}
		if st.Duration < 0 || st.Connections < -1 || st.Rate < -1 || (st.Rate < 0 && st.Rate != -1) || math.IsNaN(st.Rate) || math.IsInf(st.Rate, 0) {
			t.Fatalf("ParseStage(%q) = %+v", s, st)
		}
		canon := st.Duration.String()
		if st.Connections >= 0 {
			canon += ",conns=" + strconv.Itoa(st.Connections)
		}
		if st.Rate >= 0 {
			canon += ",rate=" + strconv.FormatFloat(st.Rate, 'g', -1, 64)
		}
		if back, err := ParseStage(canon); err != nil || back != st {
			t.Fatalf("ParseStage(%q) = %+v; its canonical form %q parses as %+v, %v", s, st, canon, back, err)
		}
		p, err := newProfile([]Stage{st, {Duration: time.Second, Connections: -1, Rate: -1}}, 1, 1)
		if err != nil {
			t.Fatalf("profile of %+v: %v", st, err)
		}
		for _, at := range []time.Duration{0, st.Duration / 2, st.Duration, p.total} {
			if _, c, r := p.at(at); math.IsNaN(c) || math.IsInf(c, 0) || math.IsNaN(r) || math.IsInf(r, 0) {
				t.Fatalf("profile of %+v at %v: conns %v rate %v", st, at, c, r)
			}
		}
	})
}

// FuzzParseScenarios: a scenario file either fails to parse or gives
// scenarios the runner takes as they are: a name, a mix it can draw from,
// thresholds that parse, and a load profile (closed model) that resolves —
// a file mistake must show when the file is read, not after the run has
// created its data.
func FuzzParseScenarios(f *testing.F) {
	for _, s := range []string{
		"name: chatty\nmix: {history: 50, send: 10}\nconnections: 20\nrate: 30\nduration: 2m\nthresholds: [\"p95<300ms\"]\n",
		"scenarios:\n  - name: a\n    mix: {send: 1}\n    stages:\n      - {duration: 30s, connections: 20, rate: 10}\n      - {duration: 1m, rate: 60}\n",
		`{"name":"j","mix":{"unread":1},"duration":90}`,
		`{"scenarios":[{"name":"x","mix":{"send":0}}]}`,
		"name: n\nmix: {send: .nan}\n",
		"name: n\nmix: {send: 1}\nduration: -5\n",
		"name: n\nmix: {send: 1}\nstages:\n  - {duration: 0s}\n",
		"name: history\nmix: {send: 1}\n",
		"mix: {nope: 1}\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := ParseScenarios(data)
		if err != nil {
			return
		}
		if len(list) == 0 {
			t.Fatalf("ParseScenarios(%q): no scenario and no error", data)
		}
		for _, sc := range list {
			if sc.Name == "" {
				t.Fatalf("ParseScenarios(%q): a scenario without a name", data)
			}
			if _, err := newChatWorkload(&dataset{}, sc.Mix, "r", 1, ""); err != nil {
				t.Fatalf("ParseScenarios(%q) accepted scenario %s, whose mix the runner refuses: %v", data, sc.Name, err)
			}
			for _, e := range sc.Thresholds {
				if _, err := ParseThreshold(e); err != nil {
					t.Fatalf("ParseScenarios(%q) accepted threshold %q: %v", data, e, err)
				}
			}
			if _, err := resolve(sc, &Options{Closed: true}); err != nil {
				t.Fatalf("ParseScenarios(%q) accepted scenario %s, whose profile the runner refuses: %v", data, sc.Name, err)
			}
		}
	})
}
