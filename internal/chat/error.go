package chat

import (
	"errors"
	"fmt"
)

// Error codes: the API's error codes (api.md). The HTTP edge maps each to its
// status once; everything below it returns *Error for conditions the caller
// can act on and plain (wrapped) errors for everything else.
const (
	EINVALID         = "invalid_argument"
	EUNAUTHENTICATED = "unauthenticated"
	EPERMISSION      = "permission_denied"
	ENOTFOUND        = "not_found"
	ECONFLICT        = "conflict"
	ETOOLARGE        = "payload_too_large"
	EUNAVAILABLE     = "unavailable"
	EINTERNAL        = "internal"
)

// Error is a domain error: a code and a message meant for the client. Err,
// when set, is the internal cause (for the log, never the client).
type Error struct {
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with code and a formatted client message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode is the code of the first *Error in err's chain, EINTERNAL for any
// other non-nil error and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage is the client message of the first *Error in err's chain, and
// a generic text for any other error (internal details never leave).
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
