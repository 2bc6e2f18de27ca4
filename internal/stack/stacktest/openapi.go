package stacktest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/parley-chat/parley/api"
)

// The API description (api/openapi.yaml) checks every request a Client
// sends and every answer it gets, so the description and the server cannot
// drift apart: an undocumented path, status, header or field fails the test
// that met it.
//
// A request is valid unless the test says otherwise with Client.Invalid —
// and then the description must refuse it too (so it says what the server
// refuses: a limit out of range, a malformed id, an oversized body). Every
// answer is validated, those to invalid requests included: its status must
// be documented for the operation with its headers and body, and an answer
// to a request for no documented operation must be an error body.

// contract is the loaded description, shared by every Client.
type contract struct {
	router routers.Router
	errors *openapi3.Schema // #/components/schemas/Error
}

var loadContract = sync.OnceValues(func() (*contract, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.YAML)
	if err != nil {
		return nil, fmt.Errorf("load api/openapi.yaml: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("api/openapi.yaml: %w", err)
	}
	// The tests' servers listen on random ports: match paths only.
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("api/openapi.yaml routes: %w", err)
	}
	errSchema := doc.Components.Schemas["Error"]
	if errSchema == nil || errSchema.Value == nil {
		return nil, errors.New("api/openapi.yaml has no #/components/schemas/Error")
	}
	return &contract{router: router, errors: errSchema.Value}, nil
})

// exchange is one request as the contract sees it, between checkRequest and
// checkResponse.
type exchange struct {
	input *openapi3filter.RequestValidationInput // nil: no documented operation
}

var filterOptions = &openapi3filter.Options{
	// Whether a token is right is the server's business (401/403 are
	// documented answers); the description only names the schemes.
	AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
	IncludeResponseStatus: true,
	MultiError:            true,
}

// checkRequest validates req (whose body is body) and returns what
// checkResponse needs. A request the test marks invalid must be one the
// description refuses.
func (c *contract) checkRequest(req *http.Request, body []byte, invalid bool) (exchange, error) {
	vreq := req.Clone(context.Background())
	vreq.Body = io.NopCloser(bytes.NewReader(body))
	route, params, err := c.router.FindRoute(vreq)
	if err != nil {
		if invalid {
			return exchange{}, nil
		}
		return exchange{}, fmt.Errorf("%s %s is not in api/openapi.yaml: %v", req.Method, req.URL.Path, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route, Options: filterOptions}
	err = openapi3filter.ValidateRequest(context.Background(), in)
	// The response check reads only the route and the request's method.
	in.Request = req.Clone(context.Background())
	switch {
	case err != nil && !invalid:
		return exchange{}, fmt.Errorf("the request breaks api/openapi.yaml: %s", brief(err))
	case err == nil && invalid:
		return exchange{}, fmt.Errorf("the test sends an invalid request on purpose, but api/openapi.yaml accepts it: make the description as strict as the server")
	}
	return exchange{input: in}, nil
}

// checkResponse validates an answer to the request of x.
func (c *contract) checkResponse(x exchange, r Reply) error {
	if r.Header.Get("X-Request-Id") == "" {
		return errors.New("the answer has no X-Request-Id")
	}
	if x.input == nil {
		// No documented operation: the server must answer with an error body.
		var v any
		if err := json.Unmarshal(r.Body, &v); err != nil {
			return fmt.Errorf("the answer to an undocumented request is not JSON: %v", err)
		}
		if err := c.errors.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
			return fmt.Errorf("the answer to an undocumented request is not an error body: %s", brief(err))
		}
		return nil
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: x.input,
		Status:                 r.Status,
		Header:                 r.Header,
		Body:                   io.NopCloser(bytes.NewReader(r.Body)),
		Options:                filterOptions,
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return fmt.Errorf("the answer breaks api/openapi.yaml: %s", brief(err))
	}
	// ValidateResponse skips the body of a status documented without content.
	if resp := x.input.Route.Operation.Responses.Status(r.Status); resp != nil && resp.Value != nil &&
		len(resp.Value.Content) == 0 && len(bytes.TrimSpace(r.Body)) > 0 && x.input.Request.Method != http.MethodHead {
		return fmt.Errorf("the answer has a body, and api/openapi.yaml documents none for %d", r.Status)
	}
	return nil
}

// describe names an exchange in a failure message.
func describe(req *http.Request, status int) string {
	s := req.Method + " " + req.URL.Path
	if req.URL.RawQuery != "" {
		s += "?" + req.URL.RawQuery
	}
	if status != 0 {
		s += fmt.Sprintf(" → %d", status)
	}
	return strings.TrimSpace(s)
}

// brief is a validation error without the schema and value dumps that
// kin-openapi appends to each reason: one line per problem.
func brief(err error) string {
	var lines []string
	for _, part := range strings.Split(err.Error(), " | ") {
		first, _, _ := strings.Cut(part, "\n")
		if first = strings.TrimSpace(first); first != "" {
			lines = append(lines, first)
		}
	}
	return strings.Join(lines, "; ")
}
