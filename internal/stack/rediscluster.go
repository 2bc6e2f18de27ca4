package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// ---- Redis Cluster ----
//
// In cluster mode the cache is a Redis Cluster of three primaries, no
// replicas (a cache loses nothing that matters with a node): Debian's
// redis-server with cluster-enabled, each node in
// <data dir>/redis-cluster/node<n> with its own nodes.conf, on a client port
// and a cluster-bus port of its own (both remembered in stack.json; the bus
// port is set explicitly, as port+10000 may be taken or above 65535). The
// slots are assigned as `redis-cli --cluster create` assigns them (three
// equal ranges, distinct config epochs, then CLUSTER MEET), with the same
// commands sent directly, without its one-second waits; up then waits until
// every node sees all 16384 slots served. A restarted node keeps its
// nodes.conf (identity and slots) but, without persistence, no data.
//
// cluster-require-full-coverage is off: with one node down the other two
// keep serving their slots (a cache should degrade, not stop), and
// cluster-node-timeout is 2 s, so that a dead node is marked failed soon.

// clusterNodes is the number of cluster primaries.
const clusterNodes = 3

// clusterSlots is Redis Cluster's hash slot count.
const clusterSlots = 16384

func (s *Stack) redisClusterDir() string { return filepath.Join(s.Dir, "redis-cluster") }
func (s *Stack) redisNodeDir(i int) string {
	return filepath.Join(s.redisClusterDir(), "node"+strconv.Itoa(i+1))
}
func (s *Stack) redisNodePIDFile(i int) string { return filepath.Join(s.redisNodeDir(i), "redis.pid") }

// redisNodeName is cluster node i's component name: redis1, redis2, redis3.
func redisNodeName(i int) string { return "redis" + strconv.Itoa(i+1) }

func (s *Stack) redisNodeConf(i int) string {
	return redisCacheConf(s.State.RedisClusterPorts[i], s.redisNodePIDFile(i), filepath.Join(s.logDir(), redisNodeName(i)+".log"),
		s.redisNodeDir(i), "256mb") + fmt.Sprintf(`cluster-enabled yes
cluster-config-file nodes.conf
cluster-port %d
cluster-announce-ip 127.0.0.1
cluster-node-timeout 2000
cluster-require-full-coverage no
`, s.State.RedisClusterBusPorts[i])
}

func (s *Stack) redisNodeRunning(i int) bool {
	return alive(readPID(s.redisNodePIDFile(i)), "redis-server")
}

// upRedisCluster starts the nodes that are not running, makes the cluster
// when the nodes are new (or repairs one whose nodes disagree), and waits
// until every node sees every slot served.
func (s *Stack) upRedisCluster(ctx context.Context) error {
	if err := s.acct.mkdir(s.redisClusterDir(), 0o700); err != nil {
		return err
	}
	for i := range clusterNodes {
		dir := s.redisNodeDir(i)
		if err := s.acct.mkdir(dir, 0o700); err != nil {
			return err
		}
		conf := filepath.Join(dir, "redis.conf")
		if err := s.acct.writeFile(conf, []byte(s.redisNodeConf(i)), 0o600); err != nil {
			return err
		}
		if s.redisNodeRunning(i) {
			continue
		}
		for _, p := range []int{s.State.RedisClusterPorts[i], s.State.RedisClusterBusPorts[i]} {
			if !portFree(p) {
				return fmt.Errorf("port %d (%s) is taken by another program: free it, or remove redis_cluster_ports and redis_cluster_bus_ports from %s to pick others",
					p, redisNodeName(i), s.stateFile())
			}
		}
		if err := s.acct.run(ctx, s.bin.Redis, conf); err != nil {
			return err
		}
	}
	clients := make([]*redis.Client, clusterNodes)
	for i := range clients {
		clients[i] = redis.NewClient(&redis.Options{Addr: loopback(s.State.RedisClusterPorts[i]),
			DialTimeout: time.Second, ReadTimeout: 2 * time.Second, MaxRetries: -1, DisableIdentity: true, PoolSize: 1})
		defer clients[i].Close()
	}
	infos := make([]map[string]string, clusterNodes)
	for i, c := range clients {
		var err error
		if infos[i], err = waitClusterInfo(ctx, c, 10*time.Second); err != nil {
			return fmt.Errorf("%s: %w (see %s)", redisNodeName(i), err, filepath.Join(s.logDir(), redisNodeName(i)+".log"))
		}
	}
	fresh, formed := 0, 0
	for _, in := range infos {
		switch {
		case in["cluster_known_nodes"] == "1" && in["cluster_slots_assigned"] == "0":
			fresh++
		case in["cluster_known_nodes"] == strconv.Itoa(clusterNodes) && in["cluster_slots_assigned"] == strconv.Itoa(clusterSlots):
			formed++
		}
	}
	switch {
	case formed == clusterNodes:
		// Made before: the restarted nodes find each other through nodes.conf.
	case fresh == clusterNodes:
		if err := s.createCluster(ctx, clients); err != nil {
			return err
		}
	default:
		s.logf("  redis cluster: the nodes disagree (a node dir was lost?): resetting and recreating it")
		for i, c := range clients {
			if err := c.FlushAll(ctx).Err(); err != nil {
				return fmt.Errorf("%s: FLUSHALL: %w", redisNodeName(i), err)
			}
			if err := c.ClusterResetHard(ctx).Err(); err != nil {
				return fmt.Errorf("%s: CLUSTER RESET HARD: %w", redisNodeName(i), err)
			}
		}
		if err := s.createCluster(ctx, clients); err != nil {
			return err
		}
	}
	return waitClusterServing(ctx, clients, 30*time.Second)
}

// createCluster does what `redis-cli --cluster create` does for primaries
// only: distinct config epochs, three equal slot ranges, then every node
// meets the first.
func (s *Stack) createCluster(ctx context.Context, clients []*redis.Client) error {
	s.logf("  redis cluster: assigning %d slots to %d primaries", clusterSlots, len(clients))
	for i, c := range clients {
		lo := i * clusterSlots / len(clients)
		hi := (i+1)*clusterSlots/len(clients) - 1
		if err := c.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER SET-CONFIG-EPOCH: %w", redisNodeName(i), err)
		}
		if err := c.ClusterAddSlotsRange(ctx, lo, hi).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER ADDSLOTSRANGE %d %d: %w", redisNodeName(i), lo, hi, err)
		}
	}
	for i := 1; i < len(clients); i++ {
		if err := clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", s.State.RedisClusterPorts[i], s.State.RedisClusterBusPorts[i]).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER MEET %s: %w", redisNodeName(0), redisNodeName(i), err)
		}
	}
	return nil
}

// waitClusterInfo waits until the node answers CLUSTER INFO.
func waitClusterInfo(ctx context.Context, c *redis.Client, timeout time.Duration) (map[string]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		in, err := clusterInfo(ctx, c)
		if err == nil {
			return in, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("not answering CLUSTER INFO after %v: %w", timeout, err)
		}
		if err := ctxSleep(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// waitClusterServing waits until every node knows every node and sees all
// slots assigned and served (cluster_state alone says ok too early: with
// full coverage off, a node alone with its own slots is "ok").
func waitClusterServing(ctx context.Context, clients []*redis.Client, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	want := map[string]string{
		"cluster_state":          "ok",
		"cluster_known_nodes":    strconv.Itoa(len(clients)),
		"cluster_slots_assigned": strconv.Itoa(clusterSlots),
		"cluster_slots_ok":       strconv.Itoa(clusterSlots),
	}
	for {
		var last string
		for i, c := range clients {
			in, err := clusterInfo(ctx, c)
			if err != nil {
				last = fmt.Sprintf("%s: %v", redisNodeName(i), err)
				break
			}
			for k, v := range want {
				if in[k] != v {
					last = fmt.Sprintf("%s: %s=%s", redisNodeName(i), k, in[k])
					break
				}
			}
			if last != "" {
				break
			}
		}
		if last == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis cluster not serving every slot after %v (%s)", timeout, last)
		}
		if err := ctxSleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// clusterInfo is a node's CLUSTER INFO as a map.
func clusterInfo(ctx context.Context, c *redis.Client) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	txt, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(txt, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

// clusterNodeDetail is the status detail of cluster node i: its view of the
// cluster and the slots it serves.
func (s *Stack) clusterNodeDetail(ctx context.Context, i int) string {
	c := redis.NewClient(&redis.Options{Addr: loopback(s.State.RedisClusterPorts[i]), DialTimeout: time.Second,
		ReadTimeout: 2 * time.Second, MaxRetries: -1, DisableIdentity: true, PoolSize: 1})
	defer c.Close()
	in, err := clusterInfo(ctx, c)
	if err != nil {
		return "CLUSTER INFO: " + err.Error()
	}
	detail := fmt.Sprintf("cluster %s, %s/%d slots ok, %s nodes", in["cluster_state"], in["cluster_slots_ok"], clusterSlots, in["cluster_known_nodes"])
	if mine := myClusterSlots(ctx, c); mine != "" {
		detail += ", serves slots " + mine
	}
	return detail
}

// myClusterSlots lists the slot ranges the node serves ("0-5460").
func myClusterSlots(ctx context.Context, c *redis.Client) string {
	txt, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(txt, "\n") {
		f := strings.Fields(line)
		if len(f) > 8 && strings.Contains(f[2], "myself") {
			return strings.Join(f[8:], " ")
		}
	}
	return ""
}

// stopRedisCluster stops every cluster node (SIGTERM: no persistence, they
// exit at once).
func (s *Stack) stopRedisCluster() error {
	var errs []error
	for i := range clusterNodes {
		if err := stopPID(readPID(s.redisNodePIDFile(i)), "redis-server", syscall.SIGTERM, 5*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", redisNodeName(i), err))
		}
	}
	return errors.Join(errs...)
}

// stopOtherRedisMode stops the Redis servers of the mode the stack is not
// in (left running by a switch of --redis).
func (s *Stack) stopOtherRedisMode() error {
	if s.RedisClustered() {
		return stopPID(readPID(s.redisPIDFile()), "redis-server", syscall.SIGTERM, 5*time.Second)
	}
	if _, err := os.Stat(s.redisClusterDir()); err != nil {
		return nil
	}
	return s.stopRedisCluster()
}
