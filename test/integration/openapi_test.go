package integration

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/parley-chat/parley/api"
)

// TestOpenAPIServed: GET /openapi.json serves api/openapi.yaml as JSON, a
// description kin-openapi's validator accepts; and every operation in it is
// served: a request without a token gets a documented answer (the client
// checks each against the description) — 401 where a token is needed, never
// the 404 or 405 of an unknown route.
func TestOpenAPIServed(t *testing.T) {
	svc := newService(t)
	a := svc.instance()
	r := a.Must(200, a.Do("GET", "/openapi.json", "", nil))
	want, err := api.JSON()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Body, want) {
		t.Fatal("/openapi.json is not api/openapi.yaml as JSON")
	}
	doc, err := openapi3.NewLoader().LoadFromData(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("/openapi.json: %v", err)
	}
	params := strings.NewReplacer("{id}", "1", "{endpoint}", "message_history")
	n := 0
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			c := a.Client
			if op.RequestBody != nil && op.RequestBody.Value.Required {
				c = c.Invalid() // no body
			}
			r := c.Do(method, params.Replace(path), "", nil)
			if r.Status == 404 || r.Status == 405 {
				t.Errorf("%s %s: %d %s", method, path, r.Status, r.Body)
			}
			n++
		}
	}
	t.Logf("%d operations answered as documented", n)
}
