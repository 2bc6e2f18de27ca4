package stack_test

import (
	"bufio"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/parley-chat/parley/internal/stack"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// The settings of deploy/pgbouncer.ini the local stack sets its own way, and
// why; every other setting there must be in effect on the stack's PgBouncer
// with the same value.
var pgbouncerLocal = map[string]string{
	"listen_addr":       "the stack listens on 127.0.0.1",
	"listen_port":       "a free port, remembered in stack.json",
	"auth_file":         "in the stack's data directory",
	"admin_users":       "the stack has one role, the app's",
	"stats_users":       "the stack has one role, the app's",
	"default_pool_size": "--pool-size (the tests use 10)",
}

// What the stack sets that deploy/pgbouncer.ini does not: where things go,
// nothing about how PgBouncer behaves.
var pgbouncerStackOnly = map[string]string{
	"unix_socket_dir":    "TCP only",
	"logfile":            "the stack's log directory",
	"pidfile":            "the stack's pgbouncer directory",
	"log_connections":    "quiet logs",
	"log_disconnections": "quiet logs",
}

// iniSection reads the key = value lines of one [section] of an ini text.
func iniSection(t *testing.T, text, section string) map[string]string {
	t.Helper()
	out := map[string]string{}
	in := false
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == ';' || line[0] == '#':
		case line[0] == '[':
			in = line == "["+section+"]"
		case in:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("[%s]: not a setting: %q", section, line)
			}
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no [%s] settings in\n%s", section, text)
	}
	return out
}

// TestPgBouncerFollowsDeployConfig: the stack's PgBouncer (and so every
// test's) runs with deploy/pgbouncer.ini's settings, read back from its
// admin console (SHOW CONFIG), except the local ones listed above; and the
// stack's configuration sets nothing else that deploy does not.
func TestPgBouncerFollowsDeployConfig(t *testing.T) {
	s := stacktest.ForTest(t)
	ctx := ctxT(t)
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(wd, "..", "..", "deploy", "pgbouncer.ini"))
	if err != nil {
		t.Fatal(err)
	}
	deploy := iniSection(t, string(b), "pgbouncer")
	local := iniSection(t, s.PgBouncerINI(), "pgbouncer")

	admin, err := stack.ConnectAdmin(ctx, s.PgBouncerAdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	rows, err := admin.Query(ctx, "SHOW CONFIG")
	if err != nil {
		t.Fatal(err)
	}
	running := map[string]string{}
	for rows.Next() {
		vals := rows.RawValues()
		running[string(vals[0])] = string(vals[1])
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	var keys []string
	for k := range deploy {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if why, ok := pgbouncerLocal[k]; ok {
			t.Logf("%s: local (%s): deploy %q, stack %q", k, why, deploy[k], local[k])
			continue
		}
		got, ok := running[k]
		if !ok {
			t.Errorf("%s = %s in deploy/pgbouncer.ini: not a PgBouncer setting (SHOW CONFIG has no such key)", k, deploy[k])
			continue
		}
		if got != deploy[k] {
			t.Errorf("%s: the stack's PgBouncer runs with %q, deploy/pgbouncer.ini says %q (internal/stack/daemons.go)", k, got, deploy[k])
		}
	}
	for k, v := range local {
		if _, inDeploy := deploy[k]; !inDeploy && pgbouncerStackOnly[k] == "" {
			t.Errorf("the stack sets %s = %s, which deploy/pgbouncer.ini does not: add it there, or list it as stack-only with a reason", k, v)
		}
	}
	for k := range pgbouncerLocal {
		if _, ok := local[k]; !ok {
			t.Errorf("%s is listed as local but the stack does not set it", k)
		}
	}
}
