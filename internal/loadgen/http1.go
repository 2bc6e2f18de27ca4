package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Request is one HTTP/1.1 request. It is encoded straight into the
// connection's write buffer; a Request may be reused for many sends as long as
// nobody mutates it (the --url mode sends one Request over and over).
type Request struct {
	Op       int    // index into Workload.Ops, for per-operation statistics
	Method   string // GET, POST, ...
	Path     string // origin-form request target: /v1/unread?x=y
	Token    string // bearer token, or "" for none
	IdemKey  string // Idempotency-Key header, or ""
	Header   []HeaderField
	Body     []byte
	WantBody bool // the workload needs the response body (Source.Done gets it)

	// State is the workload's own per-request state (e.g. which cursor
	// chain a history page belongs to). The engine never looks at it.
	State any
}

// HeaderField is one extra request header.
type HeaderField struct{ Name, Value string }

// userAgent identifies the generator in server logs.
const userAgent = "parley-load/1"

// writeRequest encodes r into w (HTTP/1.1, keep-alive). host is the Host
// header value. It does not flush.
func writeRequest(w *bufio.Writer, host string, r *Request) {
	w.WriteString(r.Method)
	w.WriteByte(' ')
	w.WriteString(r.Path)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\nUser-Agent: " + userAgent + "\r\n")
	if r.Token != "" {
		w.WriteString("Authorization: Bearer ")
		w.WriteString(r.Token)
		w.WriteString("\r\n")
	}
	if r.IdemKey != "" {
		w.WriteString("Idempotency-Key: ")
		w.WriteString(r.IdemKey)
		w.WriteString("\r\n")
	}
	for _, h := range r.Header {
		w.WriteString(h.Name)
		w.WriteString(": ")
		w.WriteString(h.Value)
		w.WriteString("\r\n")
	}
	if r.Body != nil || r.Method == "POST" || r.Method == "PUT" || r.Method == "PATCH" {
		if !hasHeader(r.Header, "Content-Type") {
			w.WriteString("Content-Type: application/json\r\n")
		}
		var num [20]byte
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(num[:0], int64(len(r.Body)), 10))
		w.WriteString("\r\n\r\n")
		w.Write(r.Body)
		return
	}
	w.WriteString("\r\n")
}

func hasHeader(h []HeaderField, name string) bool {
	for _, f := range h {
		if asciiEqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// response is what the parser extracts from one HTTP/1.1 response.
type response struct {
	status int
	close  bool   // the server will close the connection after this response
	body   []byte // only filled when asked for
	// retryAfter: the response has a Retry-After header
	retryAfter bool
}

// errNoResponse means the connection ended before the first byte of a
// response: on a reused keep-alive connection the request may be retried.
var errNoResponse = errors.New("connection closed before any response byte")

// errProtocol marks a malformed response.
var errProtocol = errors.New("malformed HTTP response")

// maxBody bounds a body the workload asked to keep (bigger ones are an error).
const maxBody = 8 << 20

// readResponse parses one response from br. The body is discarded unless
// keep is non-nil, in which case it is appended to *keep (reset first).
// method is the request's method (HEAD responses have no body).
func readResponse(br *bufio.Reader, method string, keep *[]byte) (response, error) {
	var resp response
	if keep != nil {
		*keep = (*keep)[:0]
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if len(line) == 0 && (errors.Is(err, io.EOF)) {
				return resp, errNoResponse
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				return resp, fmt.Errorf("%w: status line too long", errProtocol)
			}
			return resp, err
		}
		status, http10, err := parseStatusLine(line)
		if err != nil {
			return resp, err
		}
		resp.status = status
		resp.close = http10
		chunked, length, err := readHeaders(br, &resp, http10)
		if err != nil {
			return resp, err
		}
		if http10 {
			// Transfer-Encoding is HTTP/1.1's: an HTTP/1.0 message with it
			// was not framed by it (RFC 9112 §6.1); net/http ignores it too.
			chunked = false
		}
		if status >= 100 && status < 200 {
			continue // 100 Continue and friends: the real response follows
		}
		if method == "HEAD" || status == 204 || status == 304 {
			return resp, nil
		}
		switch {
		case chunked:
			err = readChunked(br, keep)
		case length >= 0:
			err = readLength(br, length, keep)
		default:
			// No length: the body runs to the end of the connection.
			resp.close = true
			err = readToEOF(br, keep)
		}
		if keep != nil {
			resp.body = *keep
		}
		return resp, err
	}
}

func parseStatusLine(line []byte) (status int, http10 bool, err error) {
	// "HTTP/1.1 200 OK\r\n" (net/http allows more spaces before the code)
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, false, fmt.Errorf("%w: bad status line %q", errProtocol, trimCRLF(line))
	}
	http10 = line[7] == '0'
	code := bytes.TrimLeft(line[8:], " ")
	if len(code) < 3 {
		return 0, false, fmt.Errorf("%w: bad status code in %q", errProtocol, trimCRLF(line))
	}
	s := 0
	for _, c := range code[:3] {
		if c < '0' || c > '9' {
			return 0, false, fmt.Errorf("%w: bad status code in %q", errProtocol, trimCRLF(line))
		}
		s = s*10 + int(c-'0')
	}
	return s, http10, nil
}

// readHeaders reads header lines up to the empty line and returns whether the
// body is chunked and its Content-Length (-1 when absent).
func readHeaders(br *bufio.Reader, resp *response, http10 bool) (chunked bool, length int64, err error) {
	length = -1
	keepAlive := false
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return false, 0, fmt.Errorf("%w: header line too long", errProtocol)
			}
			return false, 0, err
		}
		line = trimCRLF(line)
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return false, 0, fmt.Errorf("%w: bad header line %q", errProtocol, line)
		}
		name := line[:colon]
		value := bytes.TrimSpace(line[colon+1:])
		switch {
		case asciiEqualFoldBytes(name, "content-length"):
			n, perr := strconv.ParseInt(string(value), 10, 64)
			if perr != nil || n < 0 {
				return false, 0, fmt.Errorf("%w: bad Content-Length %q", errProtocol, value)
			}
			length = n
		case asciiEqualFoldBytes(name, "transfer-encoding"):
			if containsTokenFold(value, "chunked") {
				chunked = true
			}
		case asciiEqualFoldBytes(name, "retry-after"):
			resp.retryAfter = len(value) > 0
		case asciiEqualFoldBytes(name, "connection"):
			if containsTokenFold(value, "close") {
				resp.close = true
			}
			if containsTokenFold(value, "keep-alive") {
				keepAlive = true
			}
		}
	}
	if http10 && keepAlive {
		resp.close = false
	}
	return chunked, length, nil
}

func readLength(br *bufio.Reader, n int64, keep *[]byte) error {
	if keep == nil {
		_, err := br.Discard(int(n))
		return unexpectedEOF(err)
	}
	if n > maxBody {
		return fmt.Errorf("%w: body of %d bytes is over the %d byte limit", errProtocol, n, maxBody)
	}
	buf := grow(*keep, int(n))
	_, err := io.ReadFull(br, buf[len(buf)-int(n):])
	*keep = buf
	return unexpectedEOF(err)
}

func readChunked(br *bufio.Reader, keep *[]byte) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return unexpectedEOF(err)
		}
		line = trimCRLF(line)
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i] // chunk extensions
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("%w: bad chunk size %q", errProtocol, line)
		}
		if size == 0 {
			// Trailers up to the empty line.
			for {
				t, err := br.ReadSlice('\n')
				if err != nil {
					return unexpectedEOF(err)
				}
				if len(trimCRLF(t)) == 0 {
					return nil
				}
			}
		}
		if err := readLength(br, size, keep); err != nil {
			return err
		}
		crlf, err := br.ReadSlice('\n')
		if err != nil {
			return unexpectedEOF(err)
		}
		if len(trimCRLF(crlf)) != 0 {
			return fmt.Errorf("%w: missing CRLF after chunk", errProtocol)
		}
	}
}

func readToEOF(br *bufio.Reader, keep *[]byte) error {
	if keep == nil {
		_, err := io.Copy(io.Discard, br)
		return err
	}
	var tmp [4096]byte
	for {
		n, err := br.Read(tmp[:])
		*keep = append(*keep, tmp[:n]...)
		if len(*keep) > maxBody {
			return fmt.Errorf("%w: body over the %d byte limit", errProtocol, maxBody)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, 2*cap(b)+n)
	copy(nb, b)
	return nb
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func trimCRLF(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func asciiEqualFoldBytes(a []byte, lowerName string) bool {
	if len(a) != len(lowerName) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lowerName[i] {
			return false
		}
	}
	return true
}

// containsTokenFold reports whether the comma-separated header value v holds
// the token tok (lower case), ignoring case.
func containsTokenFold(v []byte, tok string) bool {
	for len(v) > 0 {
		i := bytes.IndexByte(v, ',')
		part := v
		if i >= 0 {
			part, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		if asciiEqualFoldBytes(bytes.TrimSpace(part), tok) {
			return true
		}
	}
	return false
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
