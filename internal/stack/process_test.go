package stack

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckReachable: a data dir under a parent the daemons' account cannot
// enter (a `mktemp -d` directory, mode 0700) is refused with a message that
// names the directory and the fix; an enterable one is accepted.
func TestCheckReachable(t *testing.T) {
	other := account{name: "someone-else", uid: os.Getuid() + 4242, gid: os.Getgid() + 4242, asRoot: true}
	base, err := os.MkdirTemp("", "reachable-") // under /tmp (mode 1777)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	closed := filepath.Join(base, "closed")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	err = other.checkReachable(filepath.Join(closed, "stack"))
	if !errors.Is(err, ErrDataDirAccess) || !strings.Contains(err.Error(), closed) || !strings.Contains(err.Error(), "chmod o+x") {
		t.Errorf("unreachable parent: %v", err)
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := other.checkReachable(filepath.Join(open, "stack")); err != nil {
		t.Errorf("reachable data dir refused: %v", err)
	}
	// Without root the daemons run as the caller, who got here.
	if err := (account{uid: os.Getuid() + 1}).checkReachable(filepath.Join(closed, "stack")); err != nil {
		t.Errorf("not root: %v", err)
	}
}
