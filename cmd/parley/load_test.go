package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadCommandExitCodes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "r.json")
	htmlPath := filepath.Join(dir, "r.html")
	base := []string{"--url", srv.URL + "/", "--duration", "300ms", "--connections", "2", "--quiet"}
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"pass", append(base, "--threshold", "error_rate<1%", "--json", jsonPath, "--html", htmlPath), 0},
		{"failed threshold exits 99", append(base, "--threshold", "p50<0.001ms"), 99},
		{"open model", append(base[:6], "--rate", "50", "--threshold", "rps>1000000"), 99},
		{"bad threshold is a usage error", append(base, "--threshold", "p97<1ms"), 2},
		{"bad stage is a usage error", append(base, "--stage", "forever"), 2},
		{"nothing to do", []string{"--quiet"}, 2},
		{"rate with closed", append(base, "--closed", "--rate", "5"), 1},
		{"unknown scenario", []string{"--scenario", "nope", "--target", srv.URL, "--admin-token", "x", "--quiet"}, 1},
		{"help", []string{"--help"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := runLoad(context.Background(), tc.args)
			if got := exitCode(err); got != tc.code {
				t.Errorf("exit code %d (err %v), want %d", got, err, tc.code)
			}
			if tc.code == 99 {
				var ee *exitError
				if !errors.As(err, &ee) || ee.code != 99 {
					t.Errorf("err = %#v, want *exitError{code: 99}", err)
				}
			}
			if tc.name == "help" && !errors.Is(err, flag.ErrHelp) {
				t.Errorf("--help: %v", err)
			}
		})
	}
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Passed    bool `json:"passed"`
		Scenarios []struct {
			Name     string `json:"name"`
			Requests int64  `json:"requests"`
			Passed   bool   `json:"passed"`
		} `json:"scenarios"`
	}
	if err := json.Unmarshal(data, &rep); err != nil || !rep.Passed || len(rep.Scenarios) != 1 || rep.Scenarios[0].Requests == 0 {
		t.Errorf("JSON report %s: %+v, %v", data, rep, err)
	}
	page, err := os.ReadFile(htmlPath)
	if err != nil || !strings.Contains(string(page), "<svg") || strings.Contains(string(page), "http://") {
		t.Errorf("HTML report: %v", err)
	}
}

// TestLoadTargets: --target takes several base URLs, repeated or as a
// comma list; PARLEY_URL holds a comma list, and the command line replaces
// it.
func TestLoadTargets(t *testing.T) {
	tests := []struct {
		name, env string
		args      []string
		want      []string
	}{
		{"one", "", []string{"--target", "http://a:1"}, []string{"http://a:1"}},
		{"repeated", "", []string{"--target", "http://a:1", "--target", "http://b:2"}, []string{"http://a:1", "http://b:2"}},
		{"comma list", "", []string{"--target", "http://a:1, http://b:2"}, []string{"http://a:1", "http://b:2"}},
		{"both", "", []string{"--target", "http://a:1,http://b:2", "--target", "http://c:3"}, []string{"http://a:1", "http://b:2", "http://c:3"}},
		{"environment", "http://a:1,http://b:2", nil, []string{"http://a:1", "http://b:2"}},
		{"command line over environment", "http://a:1,http://b:2", []string{"--target", "http://c:3"}, []string{"http://c:3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PARLEY_URL", tc.env)
			var f loadFlags
			fs := newLoadFlags(&f)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if strings.Join(f.targets, " ") != strings.Join(tc.want, " ") {
				t.Errorf("targets %q, want %q", f.targets, tc.want)
			}
		})
	}
	var f loadFlags
	if err := newLoadFlags(&f).Parse([]string{"--target", " , "}); exitCode(err) != 2 {
		t.Errorf("--target with no URL: %v, want a usage error", err)
	}
}
