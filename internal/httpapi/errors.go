package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/parley-chat/parley/internal/chat"
)

// statusOf maps the domain error codes to HTTP statuses, once, here.
var statusOf = map[string]int{
	chat.EINVALID:         http.StatusBadRequest,
	chat.EUNAUTHENTICATED: http.StatusUnauthorized,
	chat.EPERMISSION:      http.StatusForbidden,
	chat.ENOTFOUND:        http.StatusNotFound,
	chat.ECONFLICT:        http.StatusConflict,
	chat.ETOOLARGE:        http.StatusRequestEntityTooLarge,
	chat.EUNAVAILABLE:     http.StatusServiceUnavailable,
	chat.EINTERNAL:        http.StatusInternalServerError,
}

// statusClientClosed is logged and counted (never seen by anyone) when the
// client left before the answer (nginx's convention).
const statusClientClosed = 499

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	switch status {
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", retryAfterValue)
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="parley"`)
	}
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: message}})
}

// fail answers err: a domain error with its code and status (503 with
// Retry-After when the database cannot serve); the request's own deadline
// with 503 too; anything else with 500 and no details (they go to the log
// with the request id). A client that has gone gets 499 in the log.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	st := stateFrom(r.Context())
	code := chat.ErrorCode(err)
	if code == chat.EINTERNAL || code == chat.EUNAVAILABLE {
		if errors.Is(r.Context().Err(), context.Canceled) {
			st.err = errClientGone
			writeError(w, statusClientClosed, "canceled", "the request was cancelled")
			return
		}
		if code == chat.EINTERNAL && errors.Is(err, context.DeadlineExceeded) && !errors.Is(context.Cause(r.Context()), context.Canceled) {
			code, err = chat.EUNAVAILABLE, &chat.Error{Code: chat.EUNAVAILABLE, Message: "the database is unavailable; retry shortly", Err: err}
		}
	}
	if code == chat.EINTERNAL {
		st.err = err
		writeError(w, http.StatusInternalServerError, chat.EINTERNAL, "internal error (request id "+st.id+")")
		return
	}
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	if status >= 500 {
		st.err = err
	}
	writeError(w, status, code, chat.ErrorMessage(err))
}
