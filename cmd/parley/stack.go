package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/parley-chat/parley/internal/stack"
)

func init() {
	register(command{name: "stack", summary: "local PostgreSQL primary + replicas, PgBouncer, Redis (or a Redis Cluster) and Prometheus: up|down|status|env", run: runStack})
}

const stackHelp = `Manage the local topology Parley runs on one machine, built from the system's
own binaries (Debian packages postgresql-15, pgbouncer, redis-server, prometheus):

  up      start (or repair) the stack: PostgreSQL primary, --replicas streaming
          replicas made with pg_basebackup (each with its own port and
          replication slot), PgBouncer (transaction pooling), Redis (no
          persistence; --redis cluster: a Redis Cluster of three primaries)
          and Prometheus (1 s scrapes of every parley server registered in
          <data dir>/prometheus/targets, the rules of deploy/alerts.yml);
          idempotent, prints the bring-up time
  down    stop every process of the stack; the data stays
  status  each component's state (exit status 3 when one is not running)
  env     shell lines PARLEY_PRIMARY_URL=... for the stack, for
          eval "$(parley stack env)": PARLEY_REPLICA_URLS lists every replica
          (PARLEY_REPLICA_URL is the first), PARLEY_REDIS_URL is
          redis://node1?addr=node2&addr=node3 for a cluster (parley serve
          opens it as a cluster client), PARLEY_PROMETHEUS_URL

The shape (up):
  --replicas N     1 to 5 streaming replicas, named replica, replica2, …
                   (data dirs, logs, slots parley_replica, parley_replica2, …).
                   0 (default): as the stack has now, 1 on a new stack. A
                   larger N adds replicas; a smaller N STOPS the extra
                   replicas, DROPS their replication slots (a slot nobody
                   reads keeps WAL on the primary forever) and DELETES their
                   data directories (a replica is rebuilt from the primary).
  --redis MODE     single (one server) or cluster (three primaries, no
                   replicas, from Debian's redis-server in cluster mode;
                   nodes redis1..redis3 in status). Default: as the stack has
                   now, single on a new stack. Switching stops the other
                   mode's servers (a cache: nothing is kept).

When run as root the daemons run as the unprivileged OS user "parley" (created
if missing). Ports are picked free on 127.0.0.1 on first 'up' (and for each
added replica or cluster node) and remembered in <data dir>/stack.json.`

func runStack(ctx context.Context, args []string) error {
	fs := newFlags("stack", "up|down|status|env [flags]", stackHelp, "text")
	var dataDir string
	fs.String(&dataDir, "data-dir", "PARLEY_DATA_DIR", ".parley", "stack data directory")
	var cfg stack.Config
	fs.Int(&cfg.PrimaryPort, "primary-port", "PARLEY_PRIMARY_PORT", 0, "primary port (0: remembered or free)")
	fs.Int(&cfg.ReplicaPort, "replica-port", "PARLEY_REPLICA_PORT", 0, "replica port (0: remembered or free)")
	fs.Int(&cfg.PgBouncerPort, "pgbouncer-port", "PARLEY_PGBOUNCER_PORT", 0, "PgBouncer port (0: remembered or free)")
	fs.Int(&cfg.RedisPort, "redis-port", "PARLEY_REDIS_PORT", 0, "Redis port (0: remembered or free)")
	fs.Int(&cfg.PrometheusPort, "prometheus-port", "PARLEY_PROMETHEUS_PORT", 0, "Prometheus port (0: remembered or free)")
	fs.Int(&cfg.PoolSize, "pool-size", "PARLEY_PGBOUNCER_POOL_SIZE", 0, "PgBouncer default_pool_size (0: remembered or 20)")
	bindShapeFlags(fs, &cfg)
	var asJSON bool
	fs.Bool(&asJSON, "json", "PARLEY_STACK_JSON", false, "status: print JSON")
	if len(args) == 0 {
		fs.Usage()
		return fmt.Errorf("%w: stack needs a subcommand: up, down, status or env", errUsage)
	}
	sub := args[0]
	if sub == "-h" || sub == "--help" {
		fs.SetOutput(os.Stdout)
		fs.Usage()
		return nil
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	cfg.DataDir = dataDir
	if err := checkShape(cfg); err != nil {
		return err
	}
	if sub != "up" && (cfg.Replicas != 0 || cfg.Redis != "") {
		return fmt.Errorf("%w: --replicas and --redis shape the stack on 'up', not on %q", errUsage, sub)
	}
	switch sub {
	case "up":
		cfg.Log = os.Stderr
		s, err := stack.Up(ctx, cfg)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "run: eval \"$(parley stack env --data-dir %s)\"\n", s.Dir)
		return nil
	case "down":
		s, err := stack.Open(dataDir)
		if err != nil {
			if errors.Is(err, stack.ErrNoStack) {
				fmt.Fprintln(os.Stderr, "nothing to stop:", err)
				return nil
			}
			return err
		}
		return s.Down(ctx)
	case "status":
		s, err := stack.Open(dataDir)
		if err != nil {
			return err
		}
		sts := s.Status(ctx)
		if asJSON {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(sts)
		} else {
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "COMPONENT\tSTATE\tPID\tPORT\tDETAIL")
			for _, c := range sts {
				state := "running"
				if !c.Running {
					state = "STOPPED"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", c.Name, state, c.PID, c.Port, c.Detail)
			}
			tw.Flush()
		}
		if !stack.Healthy(sts) {
			return &exitError{code: 3, err: errors.New("some components are not running: 'parley stack up' restarts them")}
		}
		return nil
	case "env":
		s, err := stack.Open(dataDir)
		if err != nil {
			return err
		}
		for _, kv := range s.Env() {
			fmt.Printf("%s=%s\n", kv[0], shellQuote(kv[1]))
		}
		return nil
	}
	return fmt.Errorf("%w: unknown stack subcommand %q (want up, down, status or env)", errUsage, sub)
}

// bindShapeFlags registers --replicas and --redis (stack up, dev).
func bindShapeFlags(fs *flags, cfg *stack.Config) {
	fs.Int(&cfg.Replicas, "replicas", "PARLEY_STACK_REPLICAS", 0,
		fmt.Sprintf("streaming replicas, 1 to %d (0: as the stack has now, 1 on a new stack); fewer than now stops the extra ones, drops their slots and deletes their data", stack.MaxReplicas))
	fs.String(&cfg.Redis, "redis", "PARLEY_STACK_REDIS", "", "Redis: single or cluster (three primaries); empty: as the stack has now, single on a new stack")
}

// checkShape reports a bad --replicas or --redis as a usage error.
func checkShape(cfg stack.Config) error {
	if cfg.Replicas < 0 || cfg.Replicas > stack.MaxReplicas {
		return fmt.Errorf("%w: --replicas %d: want 1 to %d (0: as the stack has now)", errUsage, cfg.Replicas, stack.MaxReplicas)
	}
	switch cfg.Redis {
	case "", stack.RedisSingle, stack.RedisCluster:
		return nil
	}
	return fmt.Errorf("%w: --redis %q: want %s or %s", errUsage, cfg.Redis, stack.RedisSingle, stack.RedisCluster)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
