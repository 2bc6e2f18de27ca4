package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/admission"
	"github.com/parley-chat/parley/internal/chat"
)

// MaxBodyBytes is the largest request body accepted (413 above).
const MaxBodyBytes = 64 << 10

// requestState is what the middleware and handlers share about one request.
// Only the handlers of this package write it, from what the service
// returned.
type requestState struct {
	id         string
	cohort     string
	readSource chat.Source
	userID     int64
	err        error            // the cause of a 5xx, for the log only
	shed       admission.Reason // why admission control refused it (Admitted: it did not)
}

type stateKey struct{}

func stateFrom(ctx context.Context) *requestState {
	st, _ := ctx.Value(stateKey{}).(*requestState)
	return st
}

// served records what a read returned: its cohort (the metrics' label) and
// its source (X-Read-Source), when set.
func served(r *http.Request, rd chat.Read) {
	st := stateFrom(r.Context())
	if rd.Cohort != "" {
		st.cohort = rd.Cohort
	}
	if rd.Source != "" {
		st.readSource = rd.Source
	}
}

// requestID accepts a client's X-Request-Id when it is 1–128 characters of
// [A-Za-z0-9._:+=/-], and otherwise makes a random one.
func requestID(r *http.Request) string {
	if v := r.Header.Get("X-Request-Id"); v != "" && len(v) <= 128 {
		ok := true
		for i := 0; i < len(v) && ok; i++ {
			c := v[i]
			ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
				c == '.' || c == '_' || c == ':' || c == '+' || c == '=' || c == '/' || c == '-'
		}
		if ok {
			return v
		}
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusWriter records the status and the bytes written, and puts
// X-Read-Source on the answer of a read (GET) that read something: every
// read response says where it was served from, errors included. A read of
// the API (/v1/) that was refused before anything was read (no token, a
// malformed X-Consistency header) says "primary", the authority that would
// have decided: the contract puts the header on every read response.
type statusWriter struct {
	http.ResponseWriter
	st      *requestState
	read    bool // a GET or HEAD
	apiRead bool // a GET or HEAD of /v1/
	status  int
	bytes   int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		src := w.st.readSource
		if src == "" && w.apiRead {
			src = chat.SourcePrimary
		}
		if w.read && src != "" {
			if h := w.Header(); h.Get(headerReadSource) == "" {
				h.Set(headerReadSource, string(src))
			}
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ServeHTTP is the middleware chain around the routes: request id, timeout,
// body limit, panic recovery, JSON answers for unknown routes, then one
// access-log line and the HTTP metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := &requestState{id: requestID(r), cohort: chat.CohortBaseline}
	w.Header().Set("X-Request-Id", st.id)
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	sw := &statusWriter{ResponseWriter: w, st: st, read: read, apiRead: read && strings.HasPrefix(r.URL.Path, "/v1/")}
	ctx := chat.WithRequestID(context.WithValue(r.Context(), stateKey{}, st), st.id)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	r = r.WithContext(ctx)
	if r.Body != nil {
		r.Body = http.MaxBytesReader(sw, r.Body, MaxBodyBytes)
	}

	s.serveRecovered(sw, r, st)

	route := r.Pattern
	if route == "" {
		route = "unmatched"
	}
	if st.shed != admission.Admitted {
		// Shed: counted, neither timed (it would hide the admitted
		// requests' latency) nor logged (a log line per shed is the cost
		// that shedding avoids).
		s.metrics.shedObserve(route, st.shed, st.cohort)
		return
	}
	status := sw.status
	if status == 0 {
		status = http.StatusOK
	}
	elapsed := time.Since(start)
	s.metrics.observe(route, status, st.cohort, elapsed)
	if status < 500 && !s.sampled() {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("route", route),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.Int64("bytes", sw.bytes),
		slog.String("request_id", st.id),
		slog.String("cohort", st.cohort),
	}
	if st.userID != 0 {
		attrs = append(attrs, slog.Int64("user_id", st.userID))
	}
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
		if st.err != nil {
			attrs = append(attrs, slog.String("error", st.err.Error()))
		}
	}
	s.cfg.AccessLog.LogAttrs(context.Background(), level, "request", attrs...)
}

func (s *Server) serveRecovered(w *statusWriter, r *http.Request, st *requestState) {
	defer func() {
		rec := recover()
		if rec == nil {
			return
		}
		if rec == http.ErrAbortHandler {
			panic(rec)
		}
		st.err = fmt.Errorf("panic: %v", rec)
		s.cfg.Logger.Error("panic serving request", "request_id", st.id, "panic", fmt.Sprint(rec), "stack", string(debug.Stack()))
		if w.status == 0 {
			writeError(w, http.StatusInternalServerError, chat.EINTERNAL, "internal error (request id "+st.id+")")
		}
	}()
	if _, pattern := s.mux.Handler(r); pattern == "" {
		s.serveUnmatched(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// serveUnmatched answers a request no route matches: the mux's own 404 and
// 405 (with Allow) as JSON errors; anything else (a redirect to a cleaned
// path) as the mux made it.
func (s *Server) serveUnmatched(w http.ResponseWriter, r *http.Request) {
	rec := &recorder{header: http.Header{}}
	h, _ := s.mux.Handler(r)
	h.ServeHTTP(rec, r)
	switch rec.status {
	case http.StatusNotFound:
		writeError(w, http.StatusNotFound, chat.ENOTFOUND, "no such endpoint: "+r.Method+" "+r.URL.Path)
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", rec.header.Get("Allow"))
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path+"; allowed: "+rec.header.Get("Allow"))
	default:
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
		_, _ = w.Write(rec.body.Bytes())
	}
}

type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}

// sampled decides whether an ordinary request is written to the access log
// (Config.AccessLogSample).
func (s *Server) sampled() bool {
	switch p := s.cfg.AccessLogSample; {
	case p >= 1:
		return true
	case p <= 0:
		return false
	default:
		return mrand.Float64() < p
	}
}

// retryAfter is the Retry-After of 503 answers, in seconds.
const retryAfter = 1

var retryAfterValue = strconv.Itoa(retryAfter)

// errClientGone marks a request whose client went away before the answer.
var errClientGone = errors.New("client closed the request")
