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
	fs := newFlagSet("migrate", "[flags]", migrateHelp)
	url := fs.String("database-url", envString("PARLEY_MIGRATE_URL", envString("PARLEY_PRIMARY_URL", "")),
		"primary database URL (env PARLEY_MIGRATE_URL, else PARLEY_PRIMARY_URL)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *url == "" {
		return fmt.Errorf("%w: --database-url (or PARLEY_PRIMARY_URL) is required", errUsage)
	}
	return migrate(ctx, *url)
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
