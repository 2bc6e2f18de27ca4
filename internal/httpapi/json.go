package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/parley-chat/parley/internal/chat"
)

// writeJSON writes v as the JSON response body with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeJSON reads the request body (at most MaxBodyBytes, else ETOOLARGE)
// into dst strictly: valid UTF-8, one JSON value, no unknown fields, the
// right types, nothing after it. Every failure is a coded error.
func decodeJSON(r *http.Request, dst any) error {
	if r.ContentLength > MaxBodyBytes {
		return chat.Errorf(chat.ETOOLARGE, "the request body is over %d bytes", MaxBodyBytes)
	}
	if r.Body == nil {
		return chat.Errorf(chat.EINVALID, "the request body is empty; send a JSON object")
	}
	data, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return chat.Errorf(chat.ETOOLARGE, "the request body is over %d bytes", MaxBodyBytes)
	}
	if err != nil {
		return fmt.Errorf("read request body: %w", err)
	}
	if !utf8.Valid(data) {
		return chat.Errorf(chat.EINVALID, "the request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return chat.Errorf(chat.EINVALID, "unexpected data after the JSON object")
	}
	return nil
}

func jsonError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return chat.Errorf(chat.EINVALID, "the request body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return chat.Errorf(chat.EINVALID, "malformed JSON: the body ends in the middle of a value")
	case errors.As(err, &syntax):
		return chat.Errorf(chat.EINVALID, "malformed JSON at byte %d: %v", syntax.Offset, syntax)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return chat.Errorf(chat.EINVALID, "the request body must be a JSON object, not %s", typ.Value)
		}
		return chat.Errorf(chat.EINVALID, "field %q must be %s, not %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	}
	if msg := err.Error(); len(msg) > 20 && msg[:20] == "json: unknown field " {
		return chat.Errorf(chat.EINVALID, "unknown field %s", msg[20:])
	}
	return chat.Errorf(chat.EINVALID, "malformed JSON: %v", err)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	case "bool":
		return "a boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "uintptr":
		return "an integer"
	}
	return "a number"
}

// writeBody writes a JSON body made by chat.EncodeJSON (or stored by the
// cache) with its Content-Length: one Write, no chunked encoding.
func writeBody(w http.ResponseWriter, code int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}
