// Package stack runs Parley's local topology from the system's own binaries:
// a PostgreSQL 15 primary, a streaming replica made with pg_basebackup, PgBouncer
// in transaction mode in front of the primary (with a "_ro" entry for the
// replica), a Redis without persistence, and a Prometheus that scrapes every
// parley server registered in the data dir (prometheus.go). It backs `parley stack`, `parley
// dev` and every integration test (see Main and ForTest).
package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Names used inside the stack.
const (
	Superuser = "postgres" // PostgreSQL bootstrap superuser
	AppRole   = "parley"   // the application's login role (owns AppDB)
	AppDB     = "parley"   // the application's database
	SlotName  = "parley_replica"
)

// Config says where the stack lives and on which ports. Zero ports are
// taken from the saved state, else picked free on 127.0.0.1.
type Config struct {
	DataDir       string
	PrimaryPort   int
	ReplicaPort   int
	PgBouncerPort int
	RedisPort     int
	// PrometheusPort is the local Prometheus's HTTP port.
	PrometheusPort int
	// Fast trades durability for speed (fsync off): for throwaway test stacks.
	Fast bool
	// PoolSize is PgBouncer's default_pool_size (default 20).
	PoolSize int
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// State is what `up` records in <data dir>/stack.json so that later commands
// (and other processes) find the same stack.
type State struct {
	PrimaryPort       int    `json:"primary_port"`
	ReplicaPort       int    `json:"replica_port"`
	PgBouncerPort     int    `json:"pgbouncer_port"`
	RedisPort         int    `json:"redis_port"`
	PrometheusPort    int    `json:"prometheus_port"`
	AppPassword       string `json:"app_password"`
	SuperuserPassword string `json:"superuser_password"`
	Fast              bool   `json:"fast"`
	PoolSize          int    `json:"pool_size"`
}

// Stack is a local topology in one data directory.
type Stack struct {
	Dir   string
	State State
	bin   Binaries
	acct  account
	log   io.Writer
}

func (s *Stack) stateFile() string    { return filepath.Join(s.Dir, "stack.json") }
func (s *Stack) primaryDir() string   { return filepath.Join(s.Dir, "primary") }
func (s *Stack) replicaDir() string   { return filepath.Join(s.Dir, "replica") }
func (s *Stack) pgbouncerDir() string { return filepath.Join(s.Dir, "pgbouncer") }
func (s *Stack) redisDir() string     { return filepath.Join(s.Dir, "redis") }
func (s *Stack) logDir() string       { return filepath.Join(s.Dir, "log") }

// ErrNoStack is returned when a data directory holds no stack.
var ErrNoStack = errors.New("no stack in this data directory (run 'parley stack up')")

// Open loads the stack recorded in dataDir without starting anything.
func Open(dataDir string) (*Stack, error) {
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	s := &Stack{Dir: dir, log: io.Discard}
	b, err := os.ReadFile(s.stateFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNoStack)
	}
	if err != nil {
		return nil, fmt.Errorf("read stack state: %w", err)
	}
	if err := json.Unmarshal(b, &s.State); err != nil {
		return nil, fmt.Errorf("read stack state %s: %w", s.stateFile(), err)
	}
	return s, nil
}

func (s *Stack) logf(format string, args ...any) {
	fmt.Fprintf(s.log, format+"\n", args...)
}

// URLs of the stack's endpoints, for the application role unless noted.

func (s *Stack) pgURL(port int, user, password, db string, params url.Values) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password),
		Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Path: "/" + db}
	if params == nil {
		params = url.Values{}
	}
	params.Set("sslmode", "disable")
	u.RawQuery = params.Encode()
	return u.String()
}

// PrimaryURL is the direct connection to the primary's app database.
func (s *Stack) PrimaryURL() string { return s.PrimaryURLFor(AppDB) }

// PrimaryURLFor is the direct connection to database db on the primary.
func (s *Stack) PrimaryURLFor(db string) string {
	return s.pgURL(s.State.PrimaryPort, AppRole, s.State.AppPassword, db, nil)
}

// ReplicaURL is the direct connection to the replica's app database.
func (s *Stack) ReplicaURL() string { return s.ReplicaURLFor(AppDB) }

// ReplicaURLFor is the direct connection to database db on the replica.
func (s *Stack) ReplicaURLFor(db string) string {
	return s.pgURL(s.State.ReplicaPort, AppRole, s.State.AppPassword, db, nil)
}

// PgBouncerURL connects to the primary through PgBouncer. PgBouncer 1.18 in
// transaction pooling has no protocol-level prepared statements: a pgx pool
// on this URL needs QueryExecModeExec (parley's pools set it; the URL stays
// libpq-compatible so psql accepts it too).
func (s *Stack) PgBouncerURL() string { return s.PgBouncerURLFor(AppDB) }

// PgBouncerURLFor connects to database db through PgBouncer (its "*" entry
// forwards any database name to the primary).
func (s *Stack) PgBouncerURLFor(db string) string {
	return s.pgURL(s.State.PgBouncerPort, AppRole, s.State.AppPassword, db, nil)
}

// PgBouncerAdminURL connects to PgBouncer's admin console, which speaks the
// simple query protocol only (pgx: QueryExecModeSimpleProtocol).
func (s *Stack) PgBouncerAdminURL() string {
	return s.pgURL(s.State.PgBouncerPort, AppRole, s.State.AppPassword, "pgbouncer", nil)
}

// SuperuserURL connects to database db on the primary as the superuser.
func (s *Stack) SuperuserURL(db string) string {
	return s.pgURL(s.State.PrimaryPort, Superuser, s.State.SuperuserPassword, db, nil)
}

// ReplicaSuperuserURL connects to database db on the replica as the superuser.
func (s *Stack) ReplicaSuperuserURL(db string) string {
	return s.pgURL(s.State.ReplicaPort, Superuser, s.State.SuperuserPassword, db, nil)
}

// RedisAddr is Redis's host:port.
func (s *Stack) RedisAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.State.RedisPort))
}

// RedisURL is the go-redis URL of Redis database 0.
func (s *Stack) RedisURL() string { return "redis://" + s.RedisAddr() + "/0" }

// Env is the set of PARLEY_* variables that point at this stack, in a fixed order.
func (s *Stack) Env() [][2]string {
	return [][2]string{
		{"PARLEY_PRIMARY_URL", s.PrimaryURL()},
		{"PARLEY_REPLICA_URL", s.ReplicaURL()},
		{"PARLEY_REPLICA_URLS", s.ReplicaURL()},
		{"PARLEY_PGBOUNCER_URL", s.PgBouncerURL()},
		{"PARLEY_PGBOUNCER_ADMIN_URL", s.PgBouncerAdminURL()},
		{"PARLEY_REDIS_URL", s.RedisURL()},
		{"PARLEY_PROMETHEUS_URL", s.PrometheusURL()},
	}
}

// ctxSleep waits d or until ctx ends.
func ctxSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func randomSecret() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freePorts picks n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// portFree reports whether nothing listens on 127.0.0.1:port.
func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
