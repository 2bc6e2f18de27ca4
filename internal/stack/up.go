package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Up brings the stack in cfg.DataDir up and returns it. It is idempotent: a
// running component is reused, a stopped one is started, a missing or broken
// replica is rebuilt from the primary. It prints progress and the bring-up
// time to cfg.Log.
func Up(ctx context.Context, cfg Config) (*Stack, error) {
	start := time.Now()
	bin, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	acct, err := resolveAccount()
	if err != nil {
		return nil, err
	}
	raiseOpenFiles()
	if cfg.DataDir == "" {
		cfg.DataDir = ".parley"
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	s := &Stack{Dir: dir, bin: bin, acct: acct, log: cfg.Log}
	if s.log == nil {
		s.log = io.Discard
	}
	if err := acct.checkReachable(dir); err != nil {
		return nil, err
	}
	if err := acct.mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := s.loadOrInitState(cfg); err != nil {
		return nil, err
	}
	for _, d := range []string{s.pgbouncerDir(), s.redisDir(), s.logDir()} {
		if err := acct.mkdir(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"primary", s.upPrimary},
		{"replica", s.upReplica},
		{"pgbouncer", s.upPgBouncer},
		{"redis", s.upRedis},
		{"prometheus", s.upPrometheus},
	}
	for _, st := range steps {
		t := time.Now()
		if err := st.fn(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", st.name, err)
		}
		s.logf("  %-10s ready in %v", st.name, time.Since(t).Round(time.Millisecond))
	}
	s.logf("stack up in %v (data dir %s, daemons run as %s)", time.Since(start).Round(time.Millisecond), s.Dir, acct.name)
	return s, nil
}

func (s *Stack) loadOrInitState(cfg Config) error {
	if b, err := os.ReadFile(s.stateFile()); err == nil {
		if err := json.Unmarshal(b, &s.State); err != nil {
			return fmt.Errorf("read %s: %w (remove the data dir to start over)", s.stateFile(), err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read stack state: %w", err)
	}
	st := &s.State
	fresh := st.PrimaryPort == 0
	override := func(dst *int, v int) {
		if v != 0 {
			*dst = v
		}
	}
	override(&st.PrimaryPort, cfg.PrimaryPort)
	override(&st.ReplicaPort, cfg.ReplicaPort)
	override(&st.PgBouncerPort, cfg.PgBouncerPort)
	override(&st.RedisPort, cfg.RedisPort)
	override(&st.PrometheusPort, cfg.PrometheusPort)
	need := 0
	for _, p := range []int{st.PrimaryPort, st.ReplicaPort, st.PgBouncerPort, st.RedisPort, st.PrometheusPort} {
		if p == 0 {
			need++
		}
	}
	if need > 0 {
		ports, err := freePorts(need)
		if err != nil {
			return err
		}
		for _, p := range []*int{&st.PrimaryPort, &st.ReplicaPort, &st.PgBouncerPort, &st.RedisPort, &st.PrometheusPort} {
			if *p == 0 {
				*p, ports = ports[0], ports[1:]
			}
		}
	}
	if st.AppPassword == "" {
		st.AppPassword = randomSecret()
	}
	if st.SuperuserPassword == "" {
		st.SuperuserPassword = randomSecret()
	}
	if fresh {
		st.Fast = cfg.Fast
	}
	if cfg.PoolSize > 0 {
		st.PoolSize = cfg.PoolSize
	}
	if st.PoolSize == 0 {
		st.PoolSize = 20
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	// Readable by root only: it holds the passwords.
	return os.WriteFile(s.stateFile(), append(b, '\n'), 0o600)
}

// ---- PostgreSQL primary ----

func (s *Stack) postgresConf(port int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by parley stack; rewritten on every 'up'.
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = ''
max_connections = 300
shared_buffers = 256MB
work_mem = 8MB
maintenance_work_mem = 128MB
effective_cache_size = 4GB
random_page_cost = 1.1
wal_level = replica
max_wal_senders = 8
max_replication_slots = 8
wal_keep_size = 256MB
hot_standby = on
hot_standby_feedback = on
track_io_timing = on
shared_preload_libraries = 'pg_stat_statements'
log_line_prefix = '%%m [%%p] %%u@%%d '
log_min_messages = warning
log_min_error_statement = error
lc_messages = 'C'
timezone = 'UTC'
`, port)
	if s.State.Fast {
		b.WriteString("fsync = off\nfull_page_writes = off\nsynchronous_commit = off\n")
	}
	return b.String()
}

const hbaConf = `# Written by parley stack. Loopback only, passwords (SCRAM) for everyone.
host all all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
`

func (s *Stack) writePGConfig(dir string, port int) error {
	if err := s.acct.writeFile(filepath.Join(dir, "parley.conf"), []byte(s.postgresConf(port)), 0o600); err != nil {
		return err
	}
	if err := s.acct.writeFile(filepath.Join(dir, "pg_hba.conf"), []byte(hbaConf), 0o600); err != nil {
		return err
	}
	main := filepath.Join(dir, "postgresql.conf")
	b, err := os.ReadFile(main)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), "include_if_exists = 'parley.conf'") {
		b = append(b, "\ninclude_if_exists = 'parley.conf'\n"...)
		return s.acct.writeFile(main, b, 0o600)
	}
	return nil
}

func (s *Stack) pgRunning(dir string) bool {
	return alive(readPID(filepath.Join(dir, "postmaster.pid")), "postgres")
}

func (s *Stack) pgStart(ctx context.Context, dir, logName string) error {
	if s.pgRunning(dir) {
		return nil
	}
	// A stale pid file from a killed server blocks nothing (PostgreSQL checks
	// the pid), but a port taken by someone else does: say so clearly.
	port := s.State.PrimaryPort
	if dir == s.replicaDir() {
		port = s.State.ReplicaPort
	}
	if !portFree(port) {
		return fmt.Errorf("port %d is taken by another program; pick another with --%s-port or free it", port, strings.TrimSuffix(logName, ".log"))
	}
	return s.acct.run(ctx, s.bin.pg("pg_ctl"), "-D", dir, "-l", filepath.Join(s.logDir(), logName), "-w", "-t", "60", "start")
}

func (s *Stack) upPrimary(ctx context.Context) error {
	dir := s.primaryDir()
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		s.logf("  primary: initdb in %s", dir)
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := s.acct.mkdir(dir, 0o700); err != nil {
			return err
		}
		pw := filepath.Join(s.Dir, ".pwfile")
		if err := s.acct.writeFile(pw, []byte(s.State.SuperuserPassword+"\n"), 0o600); err != nil {
			return err
		}
		defer os.Remove(pw)
		if err := s.acct.run(ctx, s.bin.pg("initdb"), "-D", dir, "-U", Superuser, "--pwfile", pw,
			"--auth=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-sync"); err != nil {
			return err
		}
	}
	if err := s.writePGConfig(dir, s.State.PrimaryPort); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := s.pgStart(ctx, dir, "primary.log"); err != nil {
		return err
	}
	return s.bootstrapPrimary(ctx)
}

// bootstrapPrimary creates the app role, database, replication slot and grants
// (idempotent: it runs on every up).
func (s *Stack) bootstrapPrimary(ctx context.Context) error {
	conn, err := connectRetry(ctx, s.SuperuserURL("postgres"), 30*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	stmts := []string{
		fmt.Sprintf(`DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%[1]s') THEN
    CREATE ROLE %[1]s LOGIN;
  END IF;
END$$`, AppRole),
		fmt.Sprintf(`ALTER ROLE %s LOGIN CREATEDB PASSWORD '%s'`, AppRole, s.State.AppPassword),
		fmt.Sprintf(`GRANT pg_monitor TO %s`, AppRole),
		fmt.Sprintf(`SELECT pg_create_physical_replication_slot('%s') WHERE NOT EXISTS
		  (SELECT FROM pg_replication_slots WHERE slot_name = '%[1]s')`, SlotName),
	}
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, AppDB).Scan(&exists); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s OWNER %s`, AppDB, AppRole)); err != nil {
			return fmt.Errorf("create database: %w", err)
		}
	}
	return s.grantDatabase(ctx, AppDB)
}

// grantDatabase lets the app role pause and resume WAL replay (for lag tests)
// and use pg_stat_statements in database db. Run on the primary; it replicates.
func (s *Stack) grantDatabase(ctx context.Context, db string) error {
	conn, err := connectRetry(ctx, s.SuperuserURL(db), 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		`GRANT EXECUTE ON FUNCTION pg_wal_replay_pause() TO ` + AppRole,
		`GRANT EXECUTE ON FUNCTION pg_wal_replay_resume() TO ` + AppRole,
		`CREATE EXTENSION IF NOT EXISTS pg_stat_statements`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("grant in %s: %w", db, err)
		}
	}
	return nil
}

// ---- PostgreSQL replica ----

func (s *Stack) upReplica(ctx context.Context) error {
	dir := s.replicaDir()
	_, verr := os.Stat(filepath.Join(dir, "PG_VERSION"))
	_, serr := os.Stat(filepath.Join(dir, "standby.signal"))
	if verr != nil || serr != nil {
		if verr == nil {
			s.logf("  replica: %s is not a standby (no standby.signal): rebuilding it", dir)
		}
		if err := s.basebackup(ctx); err != nil {
			return err
		}
	}
	if err := s.writePGConfig(dir, s.State.ReplicaPort); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := s.pgStart(ctx, dir, "replica.log"); err != nil {
		return err
	}
	return s.waitStreaming(ctx, 60*time.Second)
}

func (s *Stack) basebackup(ctx context.Context) error {
	dir := s.replicaDir()
	s.logf("  replica: pg_basebackup from the primary into %s", dir)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := s.acct.mkdir(dir, 0o700); err != nil {
		return err
	}
	pgpass := filepath.Join(s.Dir, ".pgpass")
	if err := s.acct.writeFile(pgpass, []byte(fmt.Sprintf("127.0.0.1:%d:*:%s:%s\n", s.State.PrimaryPort, Superuser, s.State.SuperuserPassword)), 0o600); err != nil {
		return err
	}
	defer os.Remove(pgpass)
	cmd := s.acct.command(ctx, s.bin.pg("pg_basebackup"), "-h", "127.0.0.1", "-p", fmt.Sprint(s.State.PrimaryPort),
		"-U", Superuser, "-D", dir, "-R", "-X", "stream", "-S", SlotName, "--checkpoint=fast", "--no-sync")
	cmd.Env = append(cmd.Env, "PGPASSFILE="+pgpass)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pg_basebackup: %w: %s", err, lastLines(out, 8))
	}
	// -R writes primary_conninfo with the password from .pgpass; keep it there
	// (postgresql.auto.conf is 0600 and owned by the daemon user).
	auto := filepath.Join(dir, "postgresql.auto.conf")
	b, err := os.ReadFile(auto)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), "password=") {
		b = append(b, fmt.Sprintf("primary_conninfo = 'host=127.0.0.1 port=%d user=%s password=%s application_name=parley_replica'\n",
			s.State.PrimaryPort, Superuser, s.State.SuperuserPassword)...)
		if err := s.acct.writeFile(auto, b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// waitStreaming waits until the replica's WAL receiver is streaming
// (pg_ctl -w returns before that).
func (s *Stack) waitStreaming(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := connectRetry(ctx, s.ReplicaSuperuserURL("postgres"), timeout)
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
			return fmt.Errorf("replica not streaming after %v (last status %q, see %s)", timeout, status, filepath.Join(s.logDir(), "replica.log"))
		}
		_ = ctxSleep(ctx, 50*time.Millisecond)
	}
}

func connectRetry(ctx context.Context, url string, timeout time.Duration) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var lastErr error
	for {
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			return conn, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect: %w", lastErr)
		}
		_ = ctxSleep(ctx, 50*time.Millisecond)
	}
}
