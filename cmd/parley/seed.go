package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/seed"
)

func init() {
	register(command{name: "seed", summary: "fill a database with a realistic demo data set (through the store)", run: runSeed})
}

const seedHelp = `Create a demo data set through the store: users, DMs and groups, and long,
Zipf-skewed histories (a few conversations hold most messages, a few users
are in most conversations), read markers a little behind. Applies the
migrations first. Prints a curl example with a real user token.

Handles are <prefix>00001, <prefix>00002, ...; seeding the same database
twice needs another --handle-prefix. Tokens are shown once: --tokens-out
writes every user's id, handle and token to a file (mode 0600).`

func runSeed(ctx context.Context, args []string) error {
	f := newFlags("seed", "[flags]", seedHelp, "text")
	var url, httpAddr string
	f.Secret(&url, "database-url", "PARLEY_PRIMARY_URL", "primary database URL, direct or through PgBouncer")
	var c seed.Config
	f.Int(&c.Users, "users", "PARLEY_SEED_USERS", 1000, "users to create")
	f.Int(&c.Conversations, "conversations", "PARLEY_SEED_CONVERSATIONS", 0, "conversations to create, ~75% DMs (0: three per user)")
	f.Int(&c.Messages, "messages", "PARLEY_SEED_MESSAGES", 200000, "messages to create")
	f.String(&c.HandlePrefix, "handle-prefix", "PARLEY_SEED_HANDLE_PREFIX", "demo", "handle prefix of the created users")
	f.String(&c.TokensOut, "tokens-out", "PARLEY_SEED_TOKENS_OUT", "", "write id, handle and token of every user to this file (tab-separated, mode 0600)")
	f.Uint64(&c.Seed, "seed", "PARLEY_SEED_RANDOM_SEED", 1, "random seed (the same seed makes the same data set)")
	f.String(&httpAddr, "http-addr", "PARLEY_HTTP_ADDR", "127.0.0.1:8080", "the API's address, for the printed curl example")
	if err := f.Parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, f.Args())
	}
	if url == "" {
		return fmt.Errorf("%w: --database-url (or PARLEY_PRIMARY_URL) is required", errUsage)
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	c.Out = os.Stderr
	if err := migrate(ctx, url); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	pool, err := openPool(ctx, url, "exec", 8)
	if err != nil {
		return err
	}
	defer pool.Close()
	res, err := seed.Run(ctx, postgres.New(pool), c)
	if errors.Is(err, seed.ErrAlreadySeeded) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err != nil {
		return err
	}
	res.PrintExample(os.Stdout, httpAddr)
	return nil
}

// devSeed seeds the dev stack's database with the default sizes, unless it
// was seeded before, and prints the curl example for httpAddr.
func devSeed(ctx context.Context, url, httpAddr string) error {
	pool, err := openPool(ctx, url, "exec", 8)
	if err != nil {
		return err
	}
	defer pool.Close()
	c := seed.Config{Users: 1000, Messages: 200000, HandlePrefix: "demo", Seed: 1, Out: os.Stderr}
	res, err := seed.Run(ctx, postgres.New(pool), c)
	if errors.Is(err, seed.ErrAlreadySeeded) {
		fmt.Fprintln(os.Stderr, "seed: the demo data set exists already (its tokens were printed when it was made); skipping")
		return nil
	}
	if err != nil {
		return err
	}
	res.PrintExample(os.Stderr, httpAddr)
	return nil
}
