package stacktest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/santhosh-tekuri/jsonschema/v6"

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
//
// kin-openapi checks routes, parameters, headers and statuses; the JSON
// bodies are checked here with the same JSON Schema 2020-12 engine
// (santhosh-tekuri/jsonschema, kin-openapi's) against schemas compiled once
// each from the served JSON document — kin-openapi compiles a 3.1 schema
// anew for every value, some milliseconds per body, tens under -race.
type contract struct {
	router routers.Router

	mu       sync.Mutex
	compiler *jsonschema.Compiler
	schemas  map[string]*jsonschema.Schema // by location in openapi.json
}

// docURL names the description among the compiler's resources.
const docURL = "file:///api/openapi.json"

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
	js, err := api.JSON()
	if err != nil {
		return nil, err
	}
	raw, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, fmt.Errorf("api/openapi.json: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(docURL, raw); err != nil {
		return nil, fmt.Errorf("api/openapi.json: %w", err)
	}
	ct := &contract{router: router, compiler: c, schemas: map[string]*jsonschema.Schema{}}
	if _, err := ct.schema("#/components/schemas/Error"); err != nil {
		return nil, err
	}
	return ct, nil
})

// schema is the compiled schema at loc ("#/…" in openapi.json).
func (c *contract) schema(loc string) (*jsonschema.Schema, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.schemas[loc]; ok {
		return s, nil
	}
	s, err := c.compiler.Compile(docURL + loc)
	if err != nil {
		return nil, fmt.Errorf("compile %s of api/openapi.yaml: %w", loc, err)
	}
	c.schemas[loc] = s
	return s, nil
}

// pointer is a JSON pointer's fragment for the tokens, URL-escaped.
func pointer(tokens ...string) string {
	var b strings.Builder
	b.WriteString("#")
	for _, t := range tokens {
		t = strings.NewReplacer("~", "~0", "/", "~1").Replace(t)
		b.WriteString("/" + url.PathEscape(t))
	}
	return b.String()
}

// mediaSchema is the location of a media type's schema: base is where the
// content object's owner (a response or a request body) is.
func mediaSchema(base, mime string, mt *openapi3.MediaType) string {
	if mt.Schema.Ref != "" {
		return mt.Schema.Ref
	}
	return base + pointer("content", mime, "schema")[1:]
}

// checkJSON validates a JSON document against the schema at loc.
func (c *contract) checkJSON(loc string, body []byte) error {
	s, err := c.schema(loc)
	if err != nil {
		return err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("doesn't match %s: %s", strings.TrimPrefix(loc, "#/components/schemas/"), strings.Join(strings.Fields(err.Error()), " "))
	}
	return nil
}

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
	// The JSON bodies are checked by checkRequestBody, and the answers by
	// checkResponse.
	ExcludeRequestBody: true,
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
	err = errors.Join(c.checkParameters(in), c.checkRequestBody(in, body))
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

// checkParameters checks the request's path, query and header parameters
// (Parley's are all scalars): each required one present, none empty unless
// allowEmptyValue, each value valid against its compiled schema.
func (c *contract) checkParameters(in *openapi3filter.RequestValidationInput) error {
	route := in.Route
	type param struct {
		ref *openapi3.ParameterRef
		loc string
	}
	var ps []param
	for i, p := range route.PathItem.Parameters {
		ps = append(ps, param{p, pointer("paths", route.Path, "parameters", strconv.Itoa(i))})
	}
	for i, p := range route.Operation.Parameters {
		ps = append(ps, param{p, pointer("paths", route.Path, strings.ToLower(route.Method), "parameters", strconv.Itoa(i))})
	}
	var errs []error
	for _, p := range ps {
		if p.ref == nil || p.ref.Value == nil {
			continue
		}
		pv := p.ref.Value
		var v string
		var present bool
		switch pv.In {
		case openapi3.ParameterInPath:
			v, present = in.PathParams[pv.Name]
		case openapi3.ParameterInQuery:
			q := in.Request.URL.Query()
			present = q.Has(pv.Name)
			v = q.Get(pv.Name)
		case openapi3.ParameterInHeader:
			vs := in.Request.Header.Values(pv.Name)
			present = len(vs) > 0
			if present {
				v = vs[0]
			}
		default:
			continue // cookies: the session's, checked by the server
		}
		switch {
		case !present:
			if pv.Required {
				errs = append(errs, fmt.Errorf("parameter %q in %s is required", pv.Name, pv.In))
			}
			continue
		case v == "" && !pv.AllowEmptyValue && pv.In == openapi3.ParameterInQuery:
			errs = append(errs, fmt.Errorf("parameter %q in query: an empty value is not allowed", pv.Name))
			continue
		}
		if pv.Schema == nil || pv.Schema.Value == nil {
			continue
		}
		loc := p.loc
		if p.ref.Ref != "" {
			loc = p.ref.Ref
		}
		if pv.Schema.Ref != "" {
			loc = pv.Schema.Ref
		} else {
			loc += "/schema"
		}
		if err := c.checkScalar(loc, pv.Schema.Value, v); err != nil {
			errs = append(errs, fmt.Errorf("parameter %q in %s: %w", pv.Name, pv.In, err))
		}
	}
	return errors.Join(errs...)
}

// checkScalar validates the text of a parameter or header against the
// schema at loc: a number when the schema's type is integer or number, else
// a string.
func (c *contract) checkScalar(loc string, schema *openapi3.Schema, text string) error {
	s, err := c.schema(loc)
	if err != nil {
		return err
	}
	var val any = text
	if t := schema.Type; t != nil && (t.Is("integer") || t.Is("number")) {
		if val, err = jsonschema.UnmarshalJSON(strings.NewReader(text)); err != nil {
			return fmt.Errorf("%q is not a number", text)
		}
	}
	if err := s.Validate(val); err != nil {
		return errors.New(strings.Join(strings.Fields(err.Error()), " "))
	}
	return nil
}

// checkRequestBody validates the request's body: a JSON body against its
// compiled schema, another media type with kin-openapi.
func (c *contract) checkRequestBody(in *openapi3filter.RequestValidationInput, body []byte) error {
	op, route := in.Route.Operation, in.Route
	if op.RequestBody == nil || op.RequestBody.Value == nil {
		if len(body) > 0 {
			return errors.New("a request body where api/openapi.yaml documents none")
		}
		return nil
	}
	rb := op.RequestBody.Value
	if len(body) == 0 {
		if rb.Required {
			return errors.New("no request body; it is required")
		}
		return nil
	}
	ct := in.Request.Header.Get("Content-Type")
	mt := rb.Content.Get(ct)
	if mt == nil {
		return fmt.Errorf("request body of type %q, not documented", ct)
	}
	if base, _, _ := strings.Cut(ct, ";"); strings.TrimSpace(base) != "application/json" || mt.Schema == nil {
		in.Request.Body = io.NopCloser(bytes.NewReader(body))
		return openapi3filter.ValidateRequestBody(context.Background(), in, rb)
	}
	base := op.RequestBody.Ref
	if base == "" {
		base = pointer("paths", route.Path, strings.ToLower(route.Method), "requestBody")
	}
	if err := c.checkJSON(mediaSchema(base, "application/json", mt), body); err != nil {
		return fmt.Errorf("request body %w", err)
	}
	return nil
}

// checkResponse validates an answer to the request of x.
func (c *contract) checkResponse(x exchange, r Reply) error {
	if r.Header.Get("X-Request-Id") == "" {
		return errors.New("the answer has no X-Request-Id")
	}
	if x.input == nil {
		// No documented operation: the server must answer with an error body.
		if err := c.checkJSON("#/components/schemas/Error", r.Body); err != nil {
			return fmt.Errorf("the answer to an undocumented request is not an error body: %v", err)
		}
		return nil
	}
	route := x.input.Route
	resp := route.Operation.Responses.Status(r.Status)
	if resp == nil || resp.Value == nil {
		return fmt.Errorf("the answer breaks api/openapi.yaml: status %d is not documented for %s %s", r.Status, route.Method, route.Path)
	}
	loc := resp.Ref
	if loc == "" {
		loc = pointer("paths", route.Path, strings.ToLower(route.Method), "responses", strconv.Itoa(r.Status))
	}
	if err := c.checkHeaders(loc, resp.Value, r.Header); err != nil {
		return fmt.Errorf("the answer breaks api/openapi.yaml: %w", err)
	}
	if x.input.Request.Method == http.MethodHead {
		return nil
	}
	if len(resp.Value.Content) == 0 {
		if len(bytes.TrimSpace(r.Body)) > 0 {
			return fmt.Errorf("the answer has a body, and api/openapi.yaml documents none for %d", r.Status)
		}
		return nil
	}
	ct := r.Header.Get("Content-Type")
	mt := resp.Value.Content.Get(ct)
	if mt == nil {
		return fmt.Errorf("the answer's Content-Type %q is not documented for %d", ct, r.Status)
	}
	if base, _, _ := strings.Cut(ct, ";"); strings.TrimSpace(base) != "application/json" || mt.Schema == nil {
		return nil // HTML, text: no schema to check
	}
	if err := c.checkJSON(mediaSchema(loc, "application/json", mt), r.Body); err != nil {
		return fmt.Errorf("the answer breaks api/openapi.yaml: response body %w", err)
	}
	return nil
}

// checkHeaders checks an answer's headers against the response documented
// at loc: the required ones present, each documented one's value valid.
func (c *contract) checkHeaders(loc string, resp *openapi3.Response, h http.Header) error {
	var errs []error
	for name, ref := range resp.Headers {
		if ref == nil || ref.Value == nil || strings.EqualFold(name, "Content-Type") {
			continue
		}
		v, present := h[http.CanonicalHeaderKey(name)]
		if !present {
			if ref.Value.Required {
				errs = append(errs, fmt.Errorf("response header %q missing", name))
			}
			continue
		}
		hs := ref.Value.Schema
		if hs == nil || hs.Value == nil {
			continue
		}
		at := ref.Ref
		if at == "" {
			at = loc + pointer("headers", name)[1:]
		}
		if hs.Ref != "" {
			at = hs.Ref
		} else {
			at += "/schema"
		}
		if err := c.checkScalar(at, hs.Value, v[0]); err != nil {
			errs = append(errs, fmt.Errorf("response header %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
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
