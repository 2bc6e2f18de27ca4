package stack

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"
)

// ---- PgBouncer ----

func (s *Stack) pgbouncerPIDFile() string { return filepath.Join(s.pgbouncerDir(), "pgbouncer.pid") }
func (s *Stack) redisPIDFile() string     { return filepath.Join(s.redisDir(), "redis.pid") }

func (s *Stack) pgbouncerINI() string {
	d := s.pgbouncerDir()
	// Every setting of deploy/pgbouncer.ini's [pgbouncer] section that
	// shapes PgBouncer's behaviour (pool mode, reserve pool, query wait
	// timeout, reset query, …) is copied here with the same value, so that
	// tests exercise the deployed behaviour; only what is local differs —
	// addresses and ports, the auth file, the users, the pool size (the
	// tests' 10; --pool-size), logs, pid file — and the stack sets nothing
	// deploy does not. TestPgBouncerFollowsDeployConfig checks both ways
	// against the running PgBouncer; docs/testing.md says what follows.
	return fmt.Sprintf(`; Written by parley stack; rewritten on every 'up'. The [pgbouncer]
; settings follow deploy/pgbouncer.ini except the local ones.
[databases]
%[1]s = host=127.0.0.1 port=%[2]d dbname=%[1]s
%[1]s_ro = host=127.0.0.1 port=%[3]d dbname=%[1]s
; any other database name (test databases) goes to the primary
* = host=127.0.0.1 port=%[2]d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %[4]d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %[5]s
admin_users = %[6]s
stats_users = %[6]s
pool_mode = transaction
max_client_conn = 12000
default_pool_size = %[7]d
reserve_pool_size = 5
reserve_pool_timeout = 1
query_wait_timeout = 2
server_login_retry = 1
server_connect_timeout = 3
server_reset_query =
ignore_startup_parameters = extra_float_digits,search_path
logfile = %[8]s
pidfile = %[9]s
log_connections = 0
log_disconnections = 0
`, AppDB, s.State.PrimaryPort, s.State.ReplicaPort, s.State.PgBouncerPort,
		filepath.Join(d, "userlist.txt"), AppRole, s.State.PoolSize,
		filepath.Join(s.logDir(), "pgbouncer.log"), s.pgbouncerPIDFile())
}

func (s *Stack) pgbouncerRunning() bool {
	return alive(readPID(s.pgbouncerPIDFile()), "pgbouncer")
}

func (s *Stack) upPgBouncer(ctx context.Context) error {
	d := s.pgbouncerDir()
	userlist := fmt.Sprintf("%q %q\n", AppRole, s.State.AppPassword)
	if err := s.acct.writeFile(filepath.Join(d, "userlist.txt"), []byte(userlist), 0o600); err != nil {
		return err
	}
	ini := filepath.Join(d, "pgbouncer.ini")
	if err := s.acct.writeFile(ini, []byte(s.pgbouncerINI()), 0o600); err != nil {
		return err
	}
	if !s.pgbouncerRunning() {
		if !portFree(s.State.PgBouncerPort) {
			return fmt.Errorf("port %d is taken by another program; pick another with --pgbouncer-port or free it", s.State.PgBouncerPort)
		}
		if err := s.acct.run(ctx, s.bin.PgBouncer, "-d", ini); err != nil {
			return err
		}
	}
	return waitTCP(ctx, s.State.PgBouncerPort, 10*time.Second)
}

// ---- Redis ----

func (s *Stack) redisConf() string {
	return redisCacheConf(s.State.RedisPort, s.redisPIDFile(), filepath.Join(s.logDir(), "redis.log"), s.redisDir(), "512mb")
}

// redisCacheConf is the configuration of a Redis that serves as a cache (the
// single Redis, or a cluster node with its cluster settings added): loopback
// only, no persistence, LRU eviction at maxmemory.
func redisCacheConf(port int, pidFile, logFile, dir, maxmemory string) string {
	return fmt.Sprintf(`# Written by parley stack; rewritten on every 'up'. A cache: no persistence.
bind 127.0.0.1
port %d
protected-mode yes
daemonize yes
pidfile %s
logfile %s
dir %s
save ""
appendonly no
maxclients 10000
maxmemory %s
maxmemory-policy allkeys-lru
`, port, pidFile, logFile, dir, maxmemory)
}

func (s *Stack) redisRunning() bool {
	return alive(readPID(s.redisPIDFile()), "redis-server")
}

func (s *Stack) upRedis(ctx context.Context) error {
	conf := filepath.Join(s.redisDir(), "redis.conf")
	if err := s.acct.writeFile(conf, []byte(s.redisConf()), 0o600); err != nil {
		return err
	}
	if !s.redisRunning() {
		if !portFree(s.State.RedisPort) {
			return fmt.Errorf("port %d is taken by another program; pick another with --redis-port or free it", s.State.RedisPort)
		}
		if err := s.acct.run(ctx, s.bin.Redis, conf); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := RedisPing(ctx, s.RedisAddr())
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis not answering PING: %w", err)
		}
		if err := ctxSleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// RedisPing sends PING over a raw connection and expects +PONG.
func RedisPing(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("unexpected PING reply %q", strings.TrimSpace(line))
	}
	return nil
}

func waitTCP(ctx context.Context, port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %v: %w", addr, timeout, err)
		}
		if err := ctxSleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}
