package stack

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Binaries are the system programs the stack runs. They come from Debian's
// packages postgresql-15, pgbouncer, redis-server and prometheus.
type Binaries struct {
	PGBin      string // directory with initdb, pg_ctl, postgres, pg_basebackup
	PgBouncer  string
	Redis      string
	Prometheus string
}

// ErrMissingBinary is returned (wrapped) when a program the stack needs is not installed.
var ErrMissingBinary = errors.New("missing program")

// FindBinaries locates the programs, or returns one clear error naming the
// Debian package to install.
func FindBinaries() (Binaries, error) {
	var b Binaries
	b.PGBin = findPGBin()
	if b.PGBin == "" {
		return b, fmt.Errorf("%w: PostgreSQL 15 server binaries (initdb, pg_ctl) not found: install the Debian package postgresql-15 (apt-get install postgresql-15)", ErrMissingBinary)
	}
	var err error
	if b.PgBouncer, err = lookPath("pgbouncer", "/usr/sbin/pgbouncer"); err != nil {
		return b, fmt.Errorf("%w: pgbouncer not found: install the Debian package pgbouncer (apt-get install pgbouncer)", ErrMissingBinary)
	}
	if b.Redis, err = lookPath("redis-server", "/usr/bin/redis-server"); err != nil {
		return b, fmt.Errorf("%w: redis-server not found: install the Debian package redis-server (apt-get install redis-server)", ErrMissingBinary)
	}
	if b.Prometheus, err = lookPath("prometheus", "/usr/bin/prometheus"); err != nil {
		return b, fmt.Errorf("%w: prometheus not found: install the Debian package prometheus (apt-get install prometheus)", ErrMissingBinary)
	}
	return b, nil
}

// debianPGBin is where Debian's postgresql-15 puts the server binaries (not on PATH).
var debianPGBin = "/usr/lib/postgresql/15/bin"

func (b Binaries) pg(name string) string { return filepath.Join(b.PGBin, name) }

func findPGBin() string {
	var candidates []string
	if dir := os.Getenv("PARLEY_PG_BINDIR"); dir != "" {
		candidates = append(candidates, dir)
	}
	candidates = append(candidates, debianPGBin)
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	for _, dir := range candidates {
		if isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "pg_ctl")) && isExecutable(filepath.Join(dir, "postgres")) {
			return dir
		}
	}
	return ""
}

func lookPath(name, fallback string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if isExecutable(fallback) {
		return fallback, nil
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}
