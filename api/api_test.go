package api

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// TestLint: the description loads and passes kin-openapi's validation as an
// OpenAPI 3.1 document, in its YAML form and in the JSON form the server
// serves, and both say the same.
func TestLint(t *testing.T) {
	js, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"openapi.yaml": YAML, "openapi.json": js} {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(data)
		if err != nil {
			t.Fatalf("%s: load: %v", name, err)
		}
		if !doc.IsOpenAPI31OrLater() {
			t.Errorf("%s: openapi %q, want 3.1", name, doc.OpenAPI)
		}
		if err := doc.Validate(context.Background()); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	var fromJSON any
	if err := json.Unmarshal(js, &fromJSON); err != nil {
		t.Fatal(err)
	}
	doc, _ := openapi3.NewLoader().LoadFromData(YAML)
	y, _ := json.Marshal(doc)
	j, _ := openapi3.NewLoader().LoadFromData(js)
	jj, _ := json.Marshal(j)
	if !bytes.Equal(y, jj) {
		t.Error("the JSON form does not load to the same document as the YAML")
	}
}

// TestJSONKeepsOrder: the JSON form keeps the file's key order (openapi,
// info, … first), so it reads like the YAML.
func TestJSONKeepsOrder(t *testing.T) {
	js, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(js, []byte("{\n  \"openapi\": \"3.1.0\",\n  \"info\": {")) {
		t.Fatalf("JSON starts %q", js[:60])
	}
	for _, tc := range []struct{ yaml, json string }{
		{"a: 1\nb: [x, 2.5, true, null]\n'200': {c: \"3\"}\n", `{"a":1,"b":["x",2.5,true,null],"200":{"c":"3"}}`},
	} {
		old := YAML
		YAML = []byte(tc.yaml)
		got, err := JSON()
		YAML = old
		if err != nil {
			t.Fatal(err)
		}
		var c bytes.Buffer
		_ = json.Compact(&c, got)
		if c.String() != tc.json {
			t.Errorf("%q → %s, want %s", tc.yaml, c.String(), tc.json)
		}
	}
}
