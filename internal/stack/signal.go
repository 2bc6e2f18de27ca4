package stack

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
)

// SignalComponent sends sig to the main process of a running component, for
// fault tests: SIGSTOP hangs it — the kernel keeps accepting connections and
// buffering requests, nothing is answered — and SIGCONT resumes it. Names
// (as StopComponent's): "primary"; "replica" (the first; also "replica1"),
// "replica2", … or "replicas" (every one: the postmasters); "pgbouncer";
// "redis" (every Redis server: the single one, or all cluster nodes),
// "redis1" … "redis3" (one cluster node).
func (s *Stack) SignalComponent(name string, sig syscall.Signal) error {
	type proc struct {
		name string
		pid  int
		want string
	}
	postmaster := func(dir string) int { return readPID(filepath.Join(dir, "postmaster.pid")) }
	var procs []proc
	switch name {
	case "primary":
		procs = []proc{{name, postmaster(s.primaryDir()), "postgres"}}
	case "replicas":
		for i := range s.State.ReplicaPorts {
			procs = append(procs, proc{replicaName(i), postmaster(s.replicaDirAt(i)), "postgres"})
		}
	case "pgbouncer":
		procs = []proc{{name, readPID(s.pgbouncerPIDFile()), "pgbouncer"}}
	case "redis":
		if !s.RedisClustered() {
			procs = []proc{{name, readPID(s.redisPIDFile()), "redis-server"}}
			break
		}
		for i := range clusterNodes {
			procs = append(procs, proc{redisNodeName(i), readPID(s.redisNodePIDFile(i)), "redis-server"})
		}
	default:
		if i, ok := replicaIndex(name); ok && i < len(s.State.ReplicaPorts) {
			procs = []proc{{name, postmaster(s.replicaDirAt(i)), "postgres"}}
		} else if i, ok := redisNodeIndex(name); ok && s.RedisClustered() {
			procs = []proc{{name, readPID(s.redisNodePIDFile(i)), "redis-server"}}
		} else {
			return fmt.Errorf("unknown component %q (want primary, replica, replica2…, replicas, pgbouncer, redis, or on a cluster redis1…redis%d)", name, clusterNodes)
		}
	}
	var errs []error
	for _, p := range procs {
		if !alive(p.pid, p.want) {
			errs = append(errs, fmt.Errorf("%s is not running", p.name))
			continue
		}
		if err := syscall.Kill(p.pid, sig); err != nil {
			errs = append(errs, fmt.Errorf("signal %s (pid %d): %w", p.name, p.pid, err))
		}
	}
	return errors.Join(errs...)
}
