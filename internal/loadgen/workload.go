package loadgen

import (
	"strings"
)

// Workload is what the engines send: a set of named operations and, per
// connection, a Source of requests.
type Workload interface {
	// Ops names the operations; Request.Op indexes this slice.
	Ops() []string
	// NewSource returns the request source of one connection (worker).
	// Sources are used by one goroutine each.
	NewSource(worker int) Source
}

// Source produces the requests of one connection.
type Source interface {
	// Next returns the next request to send.
	Next() *Request
	// Done reports the outcome of a request from Next: the status (0 when
	// no response arrived) and, when the request asked for it, the body
	// (only valid during the call).
	Done(req *Request, status int, body []byte)
}

// fixedWorkload sends one request over and over (the --url mode).
type fixedWorkload struct {
	req *Request
}

// newFixedWorkload builds the single request of the --url mode.
func newFixedWorkload(method, path string, headers []HeaderField, body []byte) *fixedWorkload {
	if method == "" {
		method = "GET"
	}
	return &fixedWorkload{req: &Request{Method: strings.ToUpper(method), Path: path, Header: headers, Body: body}}
}

func (f *fixedWorkload) Ops() []string { return []string{strings.ToLower(f.req.Method)} }

func (f *fixedWorkload) NewSource(int) Source { return fixedSource{f.req} }

type fixedSource struct{ req *Request }

func (s fixedSource) Next() *Request             { return s.req }
func (s fixedSource) Done(*Request, int, []byte) {}

// statusClass maps an HTTP status to its error class (none for 1xx–3xx).
func statusClass(status int) errClass {
	switch {
	case status >= 500:
		return classHTTP5xx
	case status >= 400:
		return classHTTP4xx
	}
	return classNone
}
