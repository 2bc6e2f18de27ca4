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
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := s.loadOrInitState(cfg); err != nil {
		return nil, err
	}
	for _, d := range []string{s.pgbouncerDir(), s.redisDir(), s.logDir()} {
		if err := acct.mkdir(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	type step struct {
		name string
		fn   func(context.Context) error
	}
	steps := []step{{"primary", s.upPrimary}}
	for i := range s.keepReplicas {
		steps = append(steps, step{replicaName(i), func(ctx context.Context) error { return s.upReplica(ctx, i) }})
	}
	steps = append(steps, step{"pgbouncer", s.upPgBouncer})
	if s.RedisClustered() {
		steps = append(steps, step{"redis", s.upRedisCluster})
	} else {
		steps = append(steps, step{"redis", s.upRedis})
	}
	steps = append(steps, step{"prometheus", s.upPrometheus})
	for _, st := range steps {
		t := time.Now()
		if err := st.fn(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", st.name, err)
		}
		if st.name == "redis" {
			// The other mode's servers, from before a switch.
			if err := s.stopOtherRedisMode(); err != nil {
				return nil, err
			}
		}
		s.logf("  %-10s ready in %v", st.name, time.Since(t).Round(time.Millisecond))
		if st.name == "primary" {
			// Fewer replicas than before: the extra ones go once the
			// primary answers (their slots are dropped there).
			if err := s.removeExtraReplicas(ctx); err != nil {
				return nil, err
			}
		}
	}
	shape := fmt.Sprintf("%d replica", s.Replicas())
	if s.Replicas() != 1 {
		shape += "s"
	}
	shape += ", redis " + s.State.RedisMode
	s.logf("stack up in %v (%s; data dir %s, daemons run as %s)", time.Since(start).Round(time.Millisecond), shape, s.Dir, acct.name)
	return s, nil
}

// validate checks the shape asked for.
func (c Config) validate() error {
	if c.Replicas < 0 || c.Replicas > MaxReplicas {
		return fmt.Errorf("replicas: %d: want 1 to %d (0: as remembered)", c.Replicas, MaxReplicas)
	}
	switch c.Redis {
	case "", RedisSingle, RedisCluster:
	default:
		return fmt.Errorf("redis: %q: want %s or %s", c.Redis, RedisSingle, RedisCluster)
	}
	return nil
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
	st.upgrade()
	fresh := st.PrimaryPort == 0
	override := func(dst *int, v int) {
		if v != 0 {
			*dst = v
		}
	}
	// The shape: as asked, else as remembered, else one replica and a
	// single Redis.
	replicas := cfg.Replicas
	if replicas == 0 {
		replicas = max(1, len(st.ReplicaPorts))
	}
	// Replicas beyond the number asked for stay in the state until Up has
	// removed them (removeExtraReplicas), so that an interrupted up finds
	// them again.
	s.keepReplicas = replicas
	for len(st.ReplicaPorts) < replicas {
		st.ReplicaPorts = append(st.ReplicaPorts, 0)
	}
	if cfg.Redis != "" {
		st.RedisMode = cfg.Redis
	}
	if st.RedisMode == RedisCluster {
		for len(st.RedisClusterPorts) < clusterNodes {
			st.RedisClusterPorts = append(st.RedisClusterPorts, 0)
		}
		for len(st.RedisClusterBusPorts) < clusterNodes {
			st.RedisClusterBusPorts = append(st.RedisClusterBusPorts, 0)
		}
	}
	override(&st.PrimaryPort, cfg.PrimaryPort)
	override(&st.ReplicaPorts[0], cfg.ReplicaPort)
	override(&st.PgBouncerPort, cfg.PgBouncerPort)
	override(&st.RedisPort, cfg.RedisPort)
	override(&st.PrometheusPort, cfg.PrometheusPort)
	ports := []*int{&st.PrimaryPort, &st.PgBouncerPort, &st.RedisPort, &st.PrometheusPort}
	for i := range st.ReplicaPorts {
		ports = append(ports, &st.ReplicaPorts[i])
	}
	for i := range st.RedisClusterPorts {
		ports = append(ports, &st.RedisClusterPorts[i], &st.RedisClusterBusPorts[i])
	}
	need := 0
	for _, p := range ports {
		if *p == 0 {
			need++
		}
	}
	if need > 0 {
		free, err := freePorts(need)
		if err != nil {
			return err
		}
		for _, p := range ports {
			if *p == 0 {
				*p, free = free[0], free[1:]
			}
		}
	}
	st.ReplicaPort = st.ReplicaPorts[0]
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
	return s.saveState()
}

// saveState writes stack.json (readable by root only: it holds the
// passwords).
func (s *Stack) saveState() error {
	b, _ := json.MarshalIndent(s.State, "", "  ")
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

func (s *Stack) pgStart(ctx context.Context, dir string, port int, logName string) error {
	if s.pgRunning(dir) {
		return nil
	}
	// A stale pid file from a killed server blocks nothing (PostgreSQL checks
	// the pid), but a port taken by someone else does: say so clearly.
	if !portFree(port) {
		flag := strings.TrimSuffix(logName, ".log")
		if flag != "primary" && flag != "replica" {
			return fmt.Errorf("port %d (%s) is taken by another program: free it, or remove %s's port from %s to pick another", port, flag, flag, s.stateFile())
		}
		return fmt.Errorf("port %d is taken by another program; pick another with --%s-port or free it", port, flag)
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
	if err := s.pgStart(ctx, dir, s.State.PrimaryPort, "primary.log"); err != nil {
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
	}
	for i := range s.keepReplicas {
		stmts = append(stmts, fmt.Sprintf(`SELECT pg_create_physical_replication_slot('%s') WHERE NOT EXISTS
		  (SELECT FROM pg_replication_slots WHERE slot_name = '%[1]s')`, replicaSlot(i)))
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
