package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A run of two packages: a passes (with a subtest), b fails one test.
const events = `{"Action":"start","Package":"github.com/parley-chat/parley/internal/a"}
{"Action":"run","Package":"github.com/parley-chat/parley/internal/a","Test":"TestOne"}
{"Action":"output","Package":"github.com/parley-chat/parley/internal/a","Test":"TestOne","Output":"=== RUN   TestOne\n"}
{"Action":"run","Package":"github.com/parley-chat/parley/internal/a","Test":"TestOne/sub"}
{"Action":"pass","Package":"github.com/parley-chat/parley/internal/a","Test":"TestOne/sub","Elapsed":0.1}
{"Action":"pass","Package":"github.com/parley-chat/parley/internal/a","Test":"TestOne","Elapsed":0.2}
{"Action":"output","Package":"github.com/parley-chat/parley/internal/a","Output":"PASS\n"}
{"Action":"output","Package":"github.com/parley-chat/parley/internal/a","Output":"ok  \tgithub.com/parley-chat/parley/internal/a\t0.3s\n"}
{"Action":"pass","Package":"github.com/parley-chat/parley/internal/a","Elapsed":0.3}
{"Action":"start","Package":"github.com/parley-chat/parley/test/integration"}
{"Action":"output","Package":"github.com/parley-chat/parley/test/integration","Test":"TestGood","Output":"=== RUN   TestGood\n"}
{"Action":"output","Package":"github.com/parley-chat/parley/test/integration","Test":"TestGood","Output":"    x_test.go:3: measured: 42 ms to open\n"}
{"Action":"pass","Package":"github.com/parley-chat/parley/test/integration","Test":"TestGood","Elapsed":1}
{"Action":"output","Package":"github.com/parley-chat/parley/test/integration","Test":"TestBad","Output":"=== RUN   TestBad\n"}
{"Action":"output","Package":"github.com/parley-chat/parley/test/integration","Test":"TestBad","Output":"    x_test.go:9: boom\n"}
{"Action":"output","Package":"github.com/parley-chat/parley/test/integration","Test":"TestBad","Output":"--- FAIL: TestBad (2.00s)\n"}
{"Action":"fail","Package":"github.com/parley-chat/parley/test/integration","Test":"TestBad","Elapsed":2}
{"Action":"output","Package":"github.com/parley-chat/parley/test/integration","Output":"FAIL\n"}
{"Action":"output","Package":"github.com/parley-chat/parley/test/integration","Output":"FAIL\tgithub.com/parley-chat/parley/test/integration\t3.1s\n"}
{"Action":"fail","Package":"github.com/parley-chat/parley/test/integration","Elapsed":3.1}
`

func TestTeeAndTable(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	failed, err := tee(strings.NewReader(events), &out, dir)
	if err != nil || !failed {
		t.Fatalf("tee: failed %v, err %v", failed, err)
	}
	want := "ok  \tgithub.com/parley-chat/parley/internal/a\t0.3s\n" +
		"    x_test.go:9: boom\n--- FAIL: TestBad (2.00s)\nFAIL\nFAIL\tgithub.com/parley-chat/parley/test/integration\t3.1s\n"
	if out.String() != want {
		t.Fatalf("tee printed:\n%s\nwant:\n%s", out.String(), want)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "go-test.json")); string(b) != events {
		t.Fatal("go-test.json is not the events as they came")
	}
	summary, detailPage := filepath.Join(dir, "s.md"), filepath.Join(dir, "d.md")
	if err := table(dir, summary, detailPage); err != nil {
		t.Fatal(err)
	}
	s, _ := os.ReadFile(summary)
	d, _ := os.ReadFile(detailPage)
	for _, row := range []string{
		"| unit | 1 | 1 | 1 | 0 | 0 | 0.3 s |",
		"| integration | 1 | 2 | 1 | 1 | 0 | 3.1 s |",
		"| `test/integration` | integration | **FAIL** | 2 | 1 | 1 | 0 | 3.1 s |",
		"**failed**",
		"- `test/integration` TestGood: 42 ms to open",
	} {
		if !strings.Contains(string(s), row) {
			t.Errorf("summary lacks %q:\n%s", row, s)
		}
	}
	for _, row := range []string{"| TestOne | pass | 1 | 0.2 s |", "| TestBad | **FAIL** | 0 | 2.0 s |"} {
		if !strings.Contains(string(d), row) {
			t.Errorf("detail lacks %q:\n%s", row, d)
		}
	}
}

func TestTeeCutRun(t *testing.T) {
	cut := strings.Join(strings.Split(events, "\n")[:4], "\n") + "\n"
	var out bytes.Buffer
	failed, err := tee(strings.NewReader(cut), &out, t.TempDir())
	if err != nil || !failed || !strings.Contains(out.String(), "no result") {
		t.Fatalf("a cut run: failed %v, err %v, printed %q", failed, err, out.String())
	}
}
