package stack

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"
)

// Down stops every process of the stack, newest first, and waits until each
// is gone (escalating to SIGKILL). The data stays.
func (s *Stack) Down(ctx context.Context) error {
	var errs []error
	start := time.Now()
	if err := stopPID(readPID(s.prometheusPIDFile()), "prometheus", syscall.SIGTERM, 10*time.Second); err != nil {
		errs = append(errs, fmt.Errorf("prometheus: %w", err))
	}
	// Redis: SIGTERM (no persistence, so it exits at once).
	if err := stopPID(readPID(s.redisPIDFile()), "redis-server", syscall.SIGTERM, 5*time.Second); err != nil {
		errs = append(errs, fmt.Errorf("redis: %w", err))
	}
	// PgBouncer 1.18: SIGINT is the safe shutdown, SIGTERM the immediate one.
	if err := stopPID(readPID(s.pgbouncerPIDFile()), "pgbouncer", syscall.SIGTERM, 5*time.Second); err != nil {
		errs = append(errs, fmt.Errorf("pgbouncer: %w", err))
	}
	for _, pg := range []struct{ name, dir string }{{"replica", s.replicaDir()}, {"primary", s.primaryDir()}} {
		if err := s.stopPostgres(pg.dir); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", pg.name, err))
		}
	}
	s.logf("stack down in %v", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

// stopPostgres does what pg_ctl stop -m fast does (SIGINT to the postmaster)
// without needing to run pg_ctl as the daemon user, and waits.
func (s *Stack) stopPostgres(dir string) error {
	return stopPID(readPID(filepath.Join(dir, "postmaster.pid")), "postgres", syscall.SIGINT, 15*time.Second)
}

// StopComponent stops one component ("primary", "replica", "pgbouncer",
// "redis", "prometheus"), for fault tests and operators. Up starts it again.
func (s *Stack) StopComponent(ctx context.Context, name string) error {
	switch name {
	case "primary":
		return s.stopPostgres(s.primaryDir())
	case "replica":
		return s.stopPostgres(s.replicaDir())
	case "pgbouncer":
		return stopPID(readPID(s.pgbouncerPIDFile()), "pgbouncer", syscall.SIGTERM, 5*time.Second)
	case "redis":
		return stopPID(readPID(s.redisPIDFile()), "redis-server", syscall.SIGTERM, 5*time.Second)
	case "prometheus":
		return stopPID(readPID(s.prometheusPIDFile()), "prometheus", syscall.SIGTERM, 10*time.Second)
	}
	return fmt.Errorf("unknown component %q (want primary, replica, pgbouncer, redis or prometheus)", name)
}
