package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// openPool is a plain pool for the one-shot commands (migrate, seed); the
// server's pools are the router's (serve.go).

func parseExecMode(s string) (pgx.QueryExecMode, error) {
	switch s {
	case "exec":
		return pgx.QueryExecModeExec, nil
	case "cache_statement":
		return pgx.QueryExecModeCacheStatement, nil
	case "cache_describe":
		return pgx.QueryExecModeCacheDescribe, nil
	case "describe_exec":
		return pgx.QueryExecModeDescribeExec, nil
	case "simple_protocol":
		return pgx.QueryExecModeSimpleProtocol, nil
	}
	return 0, fmt.Errorf("%w: unknown exec mode %q (want exec, cache_statement, cache_describe, describe_exec or simple_protocol)", errUsage, s)
}

func openPool(ctx context.Context, url, execMode string, maxConns int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%w: bad PostgreSQL URL: %v", errUsage, redactErr(err))
	}
	mode, err := parseExecMode(execMode)
	if err != nil {
		return nil, err
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
