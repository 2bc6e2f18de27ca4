package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/parley-chat/parley/internal/postgres"
)

func init() {
	register(command{name: "migrate", summary: "apply the embedded schema migrations (idempotent)", run: runMigrate})
}

const migrateHelp = `Apply every embedded schema migration that the database has not seen yet,
each in its own transaction under an advisory lock (safe to run from several
instances at once, and through PgBouncer). Running it again changes nothing.`

func runMigrate(ctx context.Context, args []string) error {
	f := newFlags("migrate", "[flags]", migrateHelp, "text")
	var url, primary string
	f.Secret(&url, "database-url", "PARLEY_MIGRATE_URL", "primary database URL, direct or through PgBouncer (default: --primary-url)")
	f.Secret(&primary, "primary-url", "PARLEY_PRIMARY_URL", "primary database URL, as parley serve takes it")
	if err := f.Parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, f.Args())
	}
	if url == "" {
		url = primary
	}
	if url == "" {
		return fmt.Errorf("%w: --database-url (or PARLEY_MIGRATE_URL or PARLEY_PRIMARY_URL) is required", errUsage)
	}
	return migrate(ctx, url)
}

func migrate(ctx context.Context, url string) error {
	pool, err := openPool(ctx, url, "exec", 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := postgres.Migrate(ctx, pool, slog.Default())
	if err != nil {
		return err
	}
	v, err := postgres.SchemaVersion(ctx, pool)
	if err != nil {
		return err
	}
	slog.Info("schema up to date", "version", v, "applied_now", len(applied))
	return nil
}
