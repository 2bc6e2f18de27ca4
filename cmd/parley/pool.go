package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/internal/postgres"
)

// openPool is a plain pool for the one-shot commands (migrate, seed); the
// server's pools are the router's (serve.go).

func openPool(ctx context.Context, url, execMode string, maxConns int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%w: bad PostgreSQL URL: %v", errUsage, redactErr(err))
	}
	mode, err := postgres.ParseExecMode(execMode)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = mode
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	return pgxpool.NewWithConfig(ctx, cfg)
}

// redactErr keeps a URL-parse error from echoing passwords.
func redactErr(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "://"); i >= 0 {
		return "cannot parse connection string"
	}
	return msg
}
