package stack

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
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
	// Redis, both modes' servers: SIGTERM (no persistence, so they exit at once).
	if err := s.stopRedis(); err != nil {
		errs = append(errs, err)
	}
	// PgBouncer 1.18: SIGINT is the safe shutdown, SIGTERM the immediate one.
	if err := stopPID(readPID(s.pgbouncerPIDFile()), "pgbouncer", syscall.SIGTERM, 5*time.Second); err != nil {
		errs = append(errs, fmt.Errorf("pgbouncer: %w", err))
	}
	for i := len(s.State.ReplicaPorts) - 1; i >= 0; i-- {
		if err := s.stopPostgres(s.replicaDirAt(i)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", replicaName(i), err))
		}
	}
	if err := s.stopPostgres(s.primaryDir()); err != nil {
		errs = append(errs, fmt.Errorf("primary: %w", err))
	}
	s.logf("stack down in %v", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

// stopPostgres does what pg_ctl stop -m fast does (SIGINT to the postmaster)
// without needing to run pg_ctl as the daemon user, and waits.
func (s *Stack) stopPostgres(dir string) error {
	return stopPID(readPID(filepath.Join(dir, "postmaster.pid")), "postgres", syscall.SIGINT, 15*time.Second)
}

// stopRedis stops every Redis server of the stack, single and cluster nodes.
func (s *Stack) stopRedis() error {
	var errs []error
	if err := stopPID(readPID(s.redisPIDFile()), "redis-server", syscall.SIGTERM, 5*time.Second); err != nil {
		errs = append(errs, fmt.Errorf("redis: %w", err))
	}
	if err := s.stopRedisCluster(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// StopComponent stops one component, for fault tests and operators; Up
// starts it again. Names: "primary"; "replica" (the first; also
// "replica1"), "replica2", … or "replicas" (all of them); "pgbouncer";
// "redis" (every Redis server: the single one, or all cluster nodes),
// "redis1" … "redis3" (one cluster node); "prometheus".
func (s *Stack) StopComponent(ctx context.Context, name string) error {
	switch name {
	case "primary":
		return s.stopPostgres(s.primaryDir())
	case "replicas":
		var errs []error
		for i := range s.State.ReplicaPorts {
			if err := s.stopPostgres(s.replicaDirAt(i)); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", replicaName(i), err))
			}
		}
		return errors.Join(errs...)
	case "pgbouncer":
		return stopPID(readPID(s.pgbouncerPIDFile()), "pgbouncer", syscall.SIGTERM, 5*time.Second)
	case "redis":
		return s.stopRedis()
	case "prometheus":
		return stopPID(readPID(s.prometheusPIDFile()), "prometheus", syscall.SIGTERM, 10*time.Second)
	}
	if i, ok := replicaIndex(name); ok {
		if i >= len(s.State.ReplicaPorts) {
			return fmt.Errorf("no component %q: the stack has %d replica(s)", name, len(s.State.ReplicaPorts))
		}
		return s.stopPostgres(s.replicaDirAt(i))
	}
	if i, ok := redisNodeIndex(name); ok {
		if !s.RedisClustered() {
			return fmt.Errorf("no component %q: Redis runs as a single server (--redis cluster has redis1 to redis%d)", name, clusterNodes)
		}
		return stopPID(readPID(s.redisNodePIDFile(i)), "redis-server", syscall.SIGTERM, 5*time.Second)
	}
	return fmt.Errorf("unknown component %q (want primary, replica, replica2…, replicas, pgbouncer, redis, redis1…redis%d, or prometheus)", name, clusterNodes)
}

// redisNodeIndex parses "redis1" … "redis3" (0-based index).
func redisNodeIndex(name string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimPrefix(name, "redis"))
	if !strings.HasPrefix(name, "redis") || err != nil || n < 1 || n > clusterNodes {
		return 0, false
	}
	return n - 1, true
}
