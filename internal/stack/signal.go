package stack

import (
	"fmt"
	"path/filepath"
	"syscall"
)

// SignalComponent sends sig to the main process of a running component
// ("primary" and "replica": the postmaster; "pgbouncer"; "redis"), for fault
// tests: SIGSTOP hangs it — the kernel keeps accepting connections and
// buffering requests, nothing is answered — and SIGCONT resumes it.
func (s *Stack) SignalComponent(name string, sig syscall.Signal) error {
	var pid int
	var want string
	switch name {
	case "primary", "replica":
		dir := s.primaryDir()
		if name == "replica" {
			dir = s.replicaDir()
		}
		pid, want = readPID(filepath.Join(dir, "postmaster.pid")), "postgres"
	case "pgbouncer":
		pid, want = readPID(s.pgbouncerPIDFile()), "pgbouncer"
	case "redis":
		pid, want = readPID(s.redisPIDFile()), "redis-server"
	default:
		return fmt.Errorf("unknown component %q (want primary, replica, pgbouncer or redis)", name)
	}
	if !alive(pid, want) {
		return fmt.Errorf("%s is not running", name)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal %s (pid %d): %w", name, pid, err)
	}
	return nil
}
