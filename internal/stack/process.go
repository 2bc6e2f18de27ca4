package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RunUser is the unprivileged OS account the daemons run as when parley is
// run as root (PostgreSQL and PgBouncer refuse to run as root).
const RunUser = "parley"

// account is who the daemons run as: the current user, or RunUser when root.
type account struct {
	name     string
	uid, gid int
	asRoot   bool // parley itself runs as root and switches credentials
}

func resolveAccount() (account, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		name := "current user"
		if err == nil {
			name = u.Username
		}
		return account{name: name, uid: os.Getuid(), gid: os.Getgid()}, nil
	}
	u, err := user.Lookup(RunUser)
	if err != nil {
		out, cerr := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
			"--shell", "/usr/sbin/nologin", RunUser).CombinedOutput()
		if cerr != nil {
			return account{}, fmt.Errorf("create OS user %s for the daemons (they refuse root): %v: %s", RunUser, cerr, bytes.TrimSpace(out))
		}
		if u, err = user.Lookup(RunUser); err != nil {
			return account{}, fmt.Errorf("look up OS user %s: %w", RunUser, err)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return account{name: RunUser, uid: uid, gid: gid, asRoot: true}, nil
}

// raiseOpenFiles lifts this process's soft open-files limit to its hard limit;
// children inherit it (runuser/su would reset it to 1024, which caps PgBouncer).
func raiseOpenFiles() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// command builds a command that runs as the account, in its own session so
// that daemons it starts outlive parley and are not hit by its terminal's Ctrl-C.
func (a account) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if a.asRoot {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(a.uid), Gid: uint32(a.gid), NoSetGroups: true}
	}
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C", "LC_ALL=C", "TZ=UTC"}
	cmd.Dir = "/"
	return cmd
}

// run runs a command to completion and returns its output in the error.
func (a account) run(ctx context.Context, name string, args ...string) error {
	cmd := a.command(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, lastLines(out, 8))
	}
	return nil
}

// own makes path (a file or directory tree) belong to the account.
func (a account) own(path string) error {
	if !a.asRoot {
		return nil
	}
	return filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, a.uid, a.gid)
	})
}

// writeFile writes a file the account can read (mode perm) and owns.
func (a account) writeFile(path string, data []byte, perm os.FileMode) error {
	if err := os.WriteFile(path, data, perm); err != nil {
		return err
	}
	if err := os.Chmod(path, perm); err != nil {
		return err
	}
	return a.own(path)
}

// mkdir creates dir (mode perm) owned by the account.
func (a account) mkdir(dir string, perm os.FileMode) error {
	if err := os.MkdirAll(dir, perm); err != nil {
		return err
	}
	if err := os.Chmod(dir, perm); err != nil {
		return err
	}
	return a.own(dir)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// readPID reads a pid file whose first line is a pid (PostgreSQL's
// postmaster.pid, PgBouncer's and Redis's pid files all qualify).
func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// alive reports whether pid runs a program whose command line mentions want
// (guarding against a recycled pid).
func alive(pid int, want string) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	// A zombie has an empty command line: it is not running.
	return len(cmdline) > 0 && bytes.Contains(cmdline, []byte(want))
}

// stopPID sends sig to pid and waits until it is gone, escalating to SIGKILL
// after grace.
func stopPID(pid int, want string, sig syscall.Signal, grace time.Duration) error {
	if !alive(pid, want) {
		return nil
	}
	_ = syscall.Kill(pid, sig)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !alive(pid, want) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 100; i++ {
		if !alive(pid, want) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("process %d (%s) did not stop", pid, want)
}

// ErrDataDirAccess: the daemons' account cannot reach the data dir.
var ErrDataDirAccess = errors.New("the daemons cannot reach the data dir")

// checkReachable reports, as ErrDataDirAccess, the first directory on the
// way to dir (dir's parents, from /) that the account cannot enter: as root,
// the daemons run as RunUser, and a parent such as a `mktemp -d` directory
// (mode 0700, owned by root) would stop them with an unhelpful error from
// initdb.
func (a account) checkReachable(dir string) error {
	if !a.asRoot {
		return nil
	}
	var parents []string
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		parents = append(parents, d)
		if d == "/" || d == "." {
			break
		}
	}
	for i := len(parents) - 1; i >= 0; i-- {
		d := parents[i]
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("data dir %s: %w", dir, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		mode := fi.Mode().Perm()
		var can bool
		switch {
		case int(st.Uid) == a.uid:
			can = mode&0o100 != 0
		case int(st.Gid) == a.gid:
			can = mode&0o010 != 0
		default:
			can = mode&0o001 != 0
		}
		if !can {
			return fmt.Errorf("%w: the OS user %q, which runs PostgreSQL, PgBouncer and Redis when parley runs as root, cannot enter %s (mode %04o): "+
				"run 'chmod o+x %s' or choose a data dir elsewhere (e.g. under /var/tmp)", ErrDataDirAccess, a.name, d, mode, d)
		}
	}
	return nil
}
