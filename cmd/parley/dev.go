package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/stack"
)

func init() {
	register(command{name: "dev", summary: "the main job on one machine: local stack up, migrate, serve; Ctrl-C stops all", run: runDev})
}

const devHelp = `Bring up the local stack (PostgreSQL primary + streaming replicas, PgBouncer,
Redis) in the data dir, apply migrations and serve the API wired as 'parley
serve' would be: the primary pool through PgBouncer (exec mode), every
replica direct (prepared statements), the Redis cache, the database monitors
(PgBouncer's admin console included); the stack's Prometheus scrapes it
(PARLEY_PROMETHEUS_URL in 'parley stack env').

The larger shape (see 'parley stack --help' for --replicas and --redis):
  parley dev --replicas 2 --redis cluster --instances 2
--instances N > 1 runs N 'parley serve' processes of this binary on
consecutive ports from --http-addr's (8080, 8081, …), sharing the stack, each
registered with its Prometheus; their output is prefixed api1, api2, …
Spread load over them with 'parley load --target URL1,URL2'. With one
instance (the default) the server runs in this process.

Reads take the baseline path (primary, no cache) until a rollout says otherwise:
  curl -X PUT -H "Authorization: Bearer $(cat <data dir>/admin-token)" \
       -d '{"percent":100,"cache":true,"replica":true}' http://ADDR/admin/rollouts/message_history
The admin token is PARLEY_ADMIN_TOKEN, or a random one written to
<data dir>/admin-token. Ctrl-C stops the server and the stack; the data stays
for next time.`

func runDev(ctx context.Context, args []string) error {
	f := newFlags("dev", "[flags]", devHelp, "text")
	var c serveConfig
	bindServeFlags(f, &c)
	var dataDir, adminTok string
	var keep, seedDemo bool
	var instances int
	var shape stack.Config
	f.String(&dataDir, "data-dir", "PARLEY_DATA_DIR", ".parley", "stack data directory")
	f.Secret(&adminTok, "admin-token", "PARLEY_ADMIN_TOKEN", "bearer token for admin endpoints (default: the one in <data dir>/admin-token, made if missing)")
	f.Bool(&keep, "keep-stack", "PARLEY_KEEP_STACK", false, "leave the stack running on exit")
	f.Bool(&seedDemo, "seed", "PARLEY_DEV_SEED", false, "create the demo data set (as 'parley seed' does) unless it exists, and print a curl example")
	f.Int(&instances, "instances", "PARLEY_DEV_INSTANCES", 1, "API servers: 1 serves in this process; N > 1 runs N 'parley serve' processes on consecutive ports from --http-addr's")
	bindShapeFlags(f, &shape)
	if err := f.Parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, f.Args())
	}
	if err := c.finish(); err != nil {
		return err
	}
	if err := checkShape(shape); err != nil {
		return err
	}
	if instances < 1 || instances > 16 {
		return fmt.Errorf("%w: --instances %d: want 1 to 16", errUsage, instances)
	}
	var addrs []string
	if instances > 1 {
		var err error
		if addrs, err = instanceAddrs(c.HTTPAddr, instances); err != nil {
			return err
		}
	}
	s, err := stack.Up(ctx, stack.Config{DataDir: dataDir, Log: os.Stderr, Replicas: shape.Replicas, Redis: shape.Redis})
	if err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	if !keep {
		defer func() {
			if err := s.Down(context.Background()); err != nil {
				slog.Error("stack down", "err", err)
			}
		}()
	}
	if err := migrate(ctx, s.PrimaryURL()); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if seedDemo {
		if err := devSeed(ctx, s.PrimaryURL(), c.HTTPAddr); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
	}
	token, err := adminToken(s.Dir, adminTok)
	if err != nil {
		return err
	}
	c.PrimaryURL = s.PgBouncerURL()
	c.ReplicaURLs = s.ReplicaURLs()
	c.RedisURL = s.RedisURL()
	c.PgBouncerAdminURL = s.PgBouncerAdminURL()
	c.AdminToken = token
	if instances > 1 {
		return devInstances(ctx, c, f, s, addrs)
	}
	// The stack's Prometheus scrapes this server while it runs.
	c.PrometheusSDFile = filepath.Join(s.TargetsDir(), fmt.Sprintf("dev-%d.json", os.Getpid()))
	err = serve(ctx, c, func(addr string) {
		fmt.Fprintf(os.Stderr, "\nParley is serving on http://%s  (admin token in %s)\n  curl http://%s/readyz\n  curl -H \"Authorization: Bearer $(cat %s)\" http://%s/admin/status\n\n",
			addr, filepath.Join(s.Dir, "admin-token"), addr, filepath.Join(s.Dir, "admin-token"), addr)
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// devInstances runs the API as several `parley serve` processes until ctx
// ends or one of them exits.
func devInstances(ctx context.Context, c serveConfig, f *flags, s *stack.Stack, addrs []string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary to run 'parley serve': %w", err)
	}
	set := &instanceSet{exe: exe, c: c, addrs: addrs, sdDir: s.TargetsDir(),
		logArgs: []string{"--log-level", f.logLevel, "--log-format", f.logFormat}}
	if err := set.start(); err != nil {
		return err
	}
	defer set.stop()
	if err := set.waitReady(ctx, 60*time.Second); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	tok := filepath.Join(s.Dir, "admin-token")
	var urls []string
	for _, a := range addrs {
		urls = append(urls, "http://"+a)
	}
	fmt.Fprintf(os.Stderr, "\nParley is serving on %s  (%d instances, %d replica(s), redis %s; admin token in %s)\n",
		strings.Join(urls, " "), len(addrs), s.Replicas(), s.State.RedisMode, tok)
	fmt.Fprintf(os.Stderr, "  curl %s/readyz\n  curl -H \"Authorization: Bearer $(cat %s)\" %s/admin/status\n  parley load --target %s --admin-token \"$(cat %s)\" --scenario history --scale 0.02\n\n",
		urls[0], tok, urls[len(urls)-1], strings.Join(urls, ","), tok)
	return set.wait(ctx)
}

// adminToken returns the given token, else the token saved in the data
// dir, else a new random one saved there (0600).
func adminToken(dir, given string) (string, error) {
	if given != "" {
		return given, nil
	}
	path := filepath.Join(dir, "admin-token")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	t := "adm_" + hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("save admin token: %w", err)
	}
	fmt.Fprintf(os.Stderr, "generated admin token (saved in %s): %s\n", path, t)
	return t, nil
}
