package stack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ---- PostgreSQL replicas ----
//
// Replica i (0-based) is called "replica" for i = 0 and "replica<i+1>"
// after it: the same name for its data directory, its log file
// (log/<name>.log), its component in Status and StopComponent, and its
// replication slot ("parley_<name>"). Each is a streaming replica made with
// pg_basebackup -R from the primary, on a port of its own remembered in
// stack.json. (The router names its replicas replica1, replica2, … in the
// order of PARLEY_REPLICA_URLS, which is this order.)

// replicaName is replica i's name.
func replicaName(i int) string {
	if i == 0 {
		return "replica"
	}
	return "replica" + strconv.Itoa(i+1)
}

// replicaSlot is replica i's physical replication slot on the primary.
func replicaSlot(i int) string {
	if i == 0 {
		return SlotName
	}
	return "parley_" + replicaName(i)
}

// replicaIndex parses a component name: "replica" (or "replica1") is 0,
// "replica2" 1, …; ok is false for anything else.
func replicaIndex(name string) (int, bool) {
	if name == "replica" {
		return 0, true
	}
	n, err := strconv.Atoi(strings.TrimPrefix(name, "replica"))
	if !strings.HasPrefix(name, "replica") || err != nil || n < 1 {
		return 0, false
	}
	return n - 1, true
}

func (s *Stack) replicaDirAt(i int) string { return filepath.Join(s.Dir, replicaName(i)) }

// replicaDir is the first replica's data directory.
func (s *Stack) replicaDir() string { return s.replicaDirAt(0) }

func (s *Stack) upReplica(ctx context.Context, i int) error {
	dir := s.replicaDirAt(i)
	_, verr := os.Stat(filepath.Join(dir, "PG_VERSION"))
	_, serr := os.Stat(filepath.Join(dir, "standby.signal"))
	if verr != nil || serr != nil {
		if verr == nil {
			s.logf("  %s: %s is not a standby (no standby.signal): rebuilding it", replicaName(i), dir)
		}
		if err := s.basebackup(ctx, i); err != nil {
			return err
		}
	}
	if err := s.writePGConfig(dir, s.State.ReplicaPorts[i]); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := s.pgStart(ctx, dir, s.State.ReplicaPorts[i], replicaName(i)+".log"); err != nil {
		return err
	}
	return s.waitStreaming(ctx, i, 60*time.Second)
}

func (s *Stack) basebackup(ctx context.Context, i int) error {
	dir := s.replicaDirAt(i)
	name := replicaName(i)
	s.logf("  %s: pg_basebackup from the primary into %s (slot %s)", name, dir, replicaSlot(i))
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := s.acct.mkdir(dir, 0o700); err != nil {
		return err
	}
	pgpass := filepath.Join(s.Dir, ".pgpass-"+name)
	if err := s.acct.writeFile(pgpass, []byte(fmt.Sprintf("127.0.0.1:%d:*:%s:%s\n", s.State.PrimaryPort, Superuser, s.State.SuperuserPassword)), 0o600); err != nil {
		return err
	}
	defer os.Remove(pgpass)
	cmd := s.acct.command(ctx, s.bin.pg("pg_basebackup"), "-h", "127.0.0.1", "-p", fmt.Sprint(s.State.PrimaryPort),
		"-U", Superuser, "-D", dir, "-R", "-X", "stream", "-S", replicaSlot(i), "--checkpoint=fast", "--no-sync")
	cmd.Env = append(cmd.Env, "PGPASSFILE="+pgpass)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pg_basebackup: %w: %s", err, lastLines(out, 8))
	}
	// -R writes primary_conninfo with the password from .pgpass; keep it there
	// (postgresql.auto.conf is 0600 and owned by the daemon user). The
	// application name tells the replicas apart in pg_stat_replication.
	auto := filepath.Join(dir, "postgresql.auto.conf")
	b, err := os.ReadFile(auto)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), "password=") || !strings.Contains(string(b), "application_name=parley_") {
		b = append(b, fmt.Sprintf("primary_conninfo = 'host=127.0.0.1 port=%d user=%s password=%s application_name=parley_%s'\n",
			s.State.PrimaryPort, Superuser, s.State.SuperuserPassword, name)...)
		if err := s.acct.writeFile(auto, b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// waitStreaming waits until replica i's WAL receiver is streaming
// (pg_ctl -w returns before that).
func (s *Stack) waitStreaming(ctx context.Context, i int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := connectRetry(ctx, s.replicaSuperuserURL(i, "postgres"), timeout)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for {
		var status string
		err := conn.QueryRow(ctx, `SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')`).Scan(&status)
		if err == nil && status == "streaming" {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s not streaming after %v (last status %q, see %s)", replicaName(i), timeout, status,
				filepath.Join(s.logDir(), replicaName(i)+".log"))
		}
		_ = ctxSleep(ctx, 50*time.Millisecond)
	}
}

// removeExtraReplicas stops the replicas beyond the number asked for
// (Stack.keepReplicas), drops their replication slots and deletes their data
// directories, newest first, forgetting each one's port once it is gone.
func (s *Stack) removeExtraReplicas(ctx context.Context) error {
	if len(s.State.ReplicaPorts) <= s.keepReplicas {
		return nil
	}
	conn, err := connectRetry(ctx, s.SuperuserURL("postgres"), 10*time.Second)
	if err != nil {
		return fmt.Errorf("remove replicas: %w", err)
	}
	defer conn.Close(context.Background())
	for i := len(s.State.ReplicaPorts) - 1; i >= s.keepReplicas; i-- {
		name, dir := replicaName(i), s.replicaDirAt(i)
		if err := s.stopPostgres(dir); err != nil {
			return fmt.Errorf("remove %s: stop: %w", name, err)
		}
		// The slot can be dropped once its WAL sender has gone, a moment
		// after the replica stopped.
		var dropErr error
		for try := 0; try < 50; try++ {
			_, dropErr = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, replicaSlot(i))
			if dropErr == nil {
				break
			}
			if err := ctxSleep(ctx, 100*time.Millisecond); err != nil {
				break
			}
		}
		if dropErr != nil {
			return fmt.Errorf("remove %s: drop slot %s: %w", name, replicaSlot(i), dropErr)
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove %s: %w", name, err)
		}
		s.State.ReplicaPorts = s.State.ReplicaPorts[:i]
		if err := s.saveState(); err != nil {
			return err
		}
		s.logf("  %-10s removed (%d replica(s) asked for): stopped, slot %s dropped, %s deleted", name, s.keepReplicas, replicaSlot(i), dir)
	}
	return nil
}
