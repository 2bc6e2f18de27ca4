package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Fault helpers for `parley chaos` (internal/chaos): real mechanisms on the
// running stack, with no dependency on package testing (the test fixture's
// own helpers are internal/stack/stacktest's). Each undoes itself only when
// asked: the caller heals.

// SetReplayPaused pauses (true) or resumes (false) WAL replay on the
// replica, as the superuser.
func (s *Stack) SetReplayPaused(ctx context.Context, paused bool) error {
	conn, err := pgx.Connect(ctx, s.ReplicaSuperuserURL("postgres"))
	if err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	defer conn.Close(context.Background())
	q := `SELECT pg_wal_replay_resume()`
	if paused {
		q = `SELECT pg_wal_replay_pause()`
	}
	if _, err := conn.Exec(ctx, q); err != nil {
		return fmt.Errorf("replica: %s: %w", q, err)
	}
	return nil
}

// RestartPrimary restarts the primary with pg_ctl restart -m mode ("fast",
// "immediate": every backend killed at once, crash recovery at start) and
// returns when it accepts connections again (pg_ctl -w).
func (s *Stack) RestartPrimary(ctx context.Context, mode string) error {
	switch mode {
	case "smart", "fast", "immediate":
	default:
		return fmt.Errorf("restart primary: unknown shutdown mode %q (want smart, fast or immediate)", mode)
	}
	if err := s.tools(); err != nil {
		return err
	}
	// -l again: without it the restarted postmaster would write to pg_ctl's
	// output, which this process reads until it is closed.
	return s.acct.run(ctx, s.bin.pg("pg_ctl"), "-D", s.primaryDir(), "-l", filepath.Join(s.logDir(), "primary.log"),
		"-m", mode, "-w", "-t", "60", "restart")
}

// KillComponent sends SIGKILL to a component's main process ("pgbouncer",
// "redis") and waits until it is gone, as a crash would end it. Start it
// again with StartComponent (or Up).
func (s *Stack) KillComponent(name string) error {
	var pid int
	var want, pidFile string
	switch name {
	case "pgbouncer":
		pidFile, want = s.pgbouncerPIDFile(), "pgbouncer"
	case "redis":
		pidFile, want = s.redisPIDFile(), "redis-server"
	default:
		return fmt.Errorf("kill: unknown component %q (want pgbouncer or redis)", name)
	}
	pid = readPID(pidFile)
	if !alive(pid, want) {
		return fmt.Errorf("%s is not running", name)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s (pid %d): %w", name, pid, err)
	}
	for deadline := time.Now().Add(5 * time.Second); alive(pid, want); {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (pid %d) still alive 5 s after SIGKILL", name, pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A killed daemon leaves its pid file, and PgBouncer refuses to start
	// while the pid in it exists — a zombie counts where nothing reaps it.
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s's pid file: %w", name, err)
	}
	return nil
}

// StartComponent starts one stopped component of an existing stack
// ("pgbouncer", "redis") with its configuration rewritten as Up writes it,
// and waits until it answers; a running one is left alone. It is Up for one
// daemon, without Up's checks of the others (which cost seconds).
func (s *Stack) StartComponent(ctx context.Context, name string) error {
	if err := s.tools(); err != nil {
		return err
	}
	switch name {
	case "pgbouncer":
		return s.upPgBouncer(ctx)
	case "redis":
		return s.upRedis(ctx)
	}
	return fmt.Errorf("start: unknown component %q (want pgbouncer or redis)", name)
}

// tools finds the binaries and the daemons' account of a stack obtained
// with Open (Up sets them).
func (s *Stack) tools() error {
	if s.acct.name != "" {
		return nil
	}
	bin, err := FindBinaries()
	if err != nil {
		return err
	}
	acct, err := resolveAccount()
	if err != nil {
		return err
	}
	s.bin, s.acct = bin, acct
	return nil
}
