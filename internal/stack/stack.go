// Package stack runs Parley's local topology from the system's own binaries:
// a PostgreSQL 15 primary, one or more streaming replicas made with
// pg_basebackup (each with its own port and replication slot; replicas.go),
// PgBouncer in transaction mode in front of the primary (with a "_ro" entry
// for the first replica), Redis without persistence — one server, or a
// cluster of three primaries (rediscluster.go) —, and a Prometheus that
// scrapes every parley server registered in the data dir (prometheus.go). It
// backs `parley stack`, `parley dev` and every integration test (see
// internal/stack/stacktest).
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
	"strings"
	"time"
)

// Names used inside the stack.
const (
	Superuser = "postgres"       // PostgreSQL bootstrap superuser
	AppRole   = "parley"         // the application's login role (owns AppDB)
	AppDB     = "parley"         // the application's database
	SlotName  = "parley_replica" // the first replica's replication slot (replicaSlot)
)

// Redis modes (Config.Redis, State.RedisMode).
const (
	RedisSingle  = "single"  // one Redis server
	RedisCluster = "cluster" // a Redis Cluster of three primaries
)

// MaxReplicas bounds Config.Replicas: the primary has max_wal_senders = 8
// and max_replication_slots = 8, and pg_basebackup needs a WAL sender of its
// own while it copies.
const MaxReplicas = 5

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
	// Replicas is how many streaming replicas to run (1..MaxReplicas; 0:
	// as remembered, 1 on a new stack). More than are running adds replicas;
	// fewer stops the extra ones, drops their replication slots (a slot
	// nobody reads would keep WAL on the primary forever) and deletes their
	// data directories.
	Replicas int
	// Redis is RedisSingle or RedisCluster ("": as remembered, single on a
	// new stack). Switching stops the other mode's servers; a cache loses
	// nothing that matters.
	Redis string
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
	PrimaryPort int `json:"primary_port"`
	// ReplicaPort is the first replica's port (ReplicaPorts[0]), kept for
	// the tools that know one replica.
	ReplicaPort int `json:"replica_port"`
	// ReplicaPorts are every replica's ports, in order: replica, replica2, …
	ReplicaPorts  []int `json:"replica_ports,omitempty"`
	PgBouncerPort int   `json:"pgbouncer_port"`
	// RedisPort is the single Redis's port (remembered in cluster mode too).
	RedisPort int `json:"redis_port"`
	// RedisMode is RedisSingle ("" in an older stack.json) or RedisCluster.
	RedisMode string `json:"redis_mode,omitempty"`
	// RedisClusterPorts are the cluster nodes' client ports and
	// RedisClusterBusPorts their cluster-bus ports (set explicitly: port +
	// 10000, Redis's default, may be taken or above 65535).
	RedisClusterPorts    []int  `json:"redis_cluster_ports,omitempty"`
	RedisClusterBusPorts []int  `json:"redis_cluster_bus_ports,omitempty"`
	PrometheusPort       int    `json:"prometheus_port"`
	AppPassword          string `json:"app_password"`
	SuperuserPassword    string `json:"superuser_password"`
	Fast                 bool   `json:"fast"`
	PoolSize             int    `json:"pool_size"`
}

// Stack is a local topology in one data directory.
type Stack struct {
	Dir   string
	State State
	bin   Binaries
	acct  account
	log   io.Writer
	// keepReplicas is how many replicas Up brings up; those beyond it in
	// State.ReplicaPorts are removed once the primary answers.
	keepReplicas int
}

func (s *Stack) stateFile() string    { return filepath.Join(s.Dir, "stack.json") }
func (s *Stack) primaryDir() string   { return filepath.Join(s.Dir, "primary") }
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
	s.State.upgrade()
	return s, nil
}

// upgrade fills what a stack.json written before several replicas and
// Redis Cluster existed leaves out.
func (st *State) upgrade() {
	if len(st.ReplicaPorts) == 0 && st.ReplicaPort != 0 {
		st.ReplicaPorts = []int{st.ReplicaPort}
	}
	if st.RedisMode == "" {
		st.RedisMode = RedisSingle
	}
}

// Replicas is how many replicas the stack has.
func (s *Stack) Replicas() int { return len(s.State.ReplicaPorts) }

// RedisClustered reports whether Redis runs as a cluster.
func (s *Stack) RedisClustered() bool { return s.State.RedisMode == RedisCluster }

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

// ReplicaURL is the direct connection to the first replica's app database.
func (s *Stack) ReplicaURL() string { return s.ReplicaURLFor(AppDB) }

// ReplicaURLFor is the direct connection to database db on the first replica.
func (s *Stack) ReplicaURLFor(db string) string {
	return s.pgURL(s.State.ReplicaPort, AppRole, s.State.AppPassword, db, nil)
}

// ReplicaURLs are the direct connections to every replica's app database,
// in order (replica, replica2, …): a router's ReplicaURLs.
func (s *Stack) ReplicaURLs() []string { return s.ReplicaURLsFor(AppDB) }

// ReplicaURLsFor are the direct connections to database db on every replica.
func (s *Stack) ReplicaURLsFor(db string) []string {
	out := make([]string, len(s.State.ReplicaPorts))
	for i, port := range s.State.ReplicaPorts {
		out[i] = s.pgURL(port, AppRole, s.State.AppPassword, db, nil)
	}
	return out
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

// ReplicaSuperuserURL connects to database db on the first replica as the superuser.
func (s *Stack) ReplicaSuperuserURL(db string) string {
	return s.replicaSuperuserURL(0, db)
}

// ReplicaSuperuserURLs connect to database db on every replica, in order,
// as the superuser.
func (s *Stack) ReplicaSuperuserURLs(db string) []string {
	out := make([]string, len(s.State.ReplicaPorts))
	for i := range s.State.ReplicaPorts {
		out[i] = s.replicaSuperuserURL(i, db)
	}
	return out
}

func (s *Stack) replicaSuperuserURL(i int, db string) string {
	return s.pgURL(s.State.ReplicaPorts[i], Superuser, s.State.SuperuserPassword, db, nil)
}

// RedisAddr is Redis's host:port: the single server's, or in cluster mode
// the first node's (any node answers PING; see RedisAddrs).
func (s *Stack) RedisAddr() string {
	if s.RedisClustered() && len(s.State.RedisClusterPorts) > 0 {
		return loopback(s.State.RedisClusterPorts[0])
	}
	return loopback(s.State.RedisPort)
}

// RedisAddrs are every Redis server's host:port: one, or the cluster's nodes.
func (s *Stack) RedisAddrs() []string {
	if !s.RedisClustered() {
		return []string{loopback(s.State.RedisPort)}
	}
	out := make([]string, len(s.State.RedisClusterPorts))
	for i, p := range s.State.RedisClusterPorts {
		out[i] = loopback(p)
	}
	return out
}

// RedisURL is the cache's go-redis URL: redis://host:port/0 for the single
// server, or in cluster mode redis://node1?addr=node2&addr=node3, which
// cache.NewClient opens as a cluster client.
func (s *Stack) RedisURL() string {
	addrs := s.RedisAddrs()
	if !s.RedisClustered() {
		return "redis://" + addrs[0] + "/0"
	}
	// Loopback host:port pairs need no escaping.
	return "redis://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr=")
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// Env is the set of PARLEY_* variables that point at this stack, in a fixed
// order. PARLEY_REPLICA_URL is the first replica, PARLEY_REPLICA_URLS every
// replica (comma-separated).
func (s *Stack) Env() [][2]string {
	return [][2]string{
		{"PARLEY_PRIMARY_URL", s.PrimaryURL()},
		{"PARLEY_REPLICA_URL", s.ReplicaURL()},
		{"PARLEY_REPLICA_URLS", strings.Join(s.ReplicaURLs(), ",")},
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
