package stack

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
)

// Databases beside the app's: the tests make one per test (see
// internal/stack/stacktest), each owned by the app role, with the same grants
// as the app's database.

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// CreateDatabase creates database name owned by the app role on the primary
// (a copy of template when it is not ""), grants in it what the app's
// database has, and waits until every replica has it too.
func (s *Stack) CreateDatabase(ctx context.Context, name, template string) error {
	if !identRE.MatchString(name) || (template != "" && !identRE.MatchString(template)) {
		return fmt.Errorf("create database: %q / %q: names must be lower-case identifiers", name, template)
	}
	conn, err := connectRetry(ctx, s.SuperuserURL("postgres"), 10*time.Second)
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	defer conn.Close(context.Background())
	q := fmt.Sprintf(`CREATE DATABASE %s OWNER %s`, name, AppRole)
	if template != "" {
		q += " TEMPLATE " + template
	}
	if _, err := conn.Exec(ctx, q); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	if template != "" {
		if err := copyRoleSettings(ctx, conn, template, name); err != nil {
			return fmt.Errorf("create database %s: %w", name, err)
		}
	}
	if err := s.grantDatabase(ctx, name); err != nil {
		return err
	}
	for i, u := range s.ReplicaURLsFor(name) {
		if err := WaitReplicaCaughtUp(ctx, s.PrimaryURLFor(name), u); err != nil {
			return fmt.Errorf("database %s on %s: %w", name, replicaName(i), err)
		}
	}
	return nil
}

// copyRoleSettings gives database to the per-database role settings of
// template (ALTER ROLE … IN DATABASE … SET, pg_db_role_setting), which
// CREATE DATABASE … TEMPLATE does not copy: without them a test database
// would lack the server-side timeouts that migration 0070 sets on the app
// role in the app's database, and the tests would not run as the server does.
func copyRoleSettings(ctx context.Context, conn *pgx.Conn, template, database string) error {
	rows, err := conn.Query(ctx, `
		SELECT format('ALTER ROLE %s IN DATABASE %I SET %s = %L',
		              coalesce(quote_ident(r.rolname), 'ALL'), $2::text,
		              split_part(c, '=', 1), substr(c, strpos(c, '=') + 1))
		FROM pg_db_role_setting s
		LEFT JOIN pg_roles r ON r.oid = s.setrole
		CROSS JOIN LATERAL unnest(s.setconfig) AS c
		WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = $1)
		ORDER BY 1`, template, database)
	if err != nil {
		return fmt.Errorf("role settings of %s: %w", template, err)
	}
	stmts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("role settings of %s: %w", template, err)
	}
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("copy role setting of %s: %w", template, err)
		}
	}
	return nil
}

// DropDatabase drops database name, closing its connections.
func (s *Stack) DropDatabase(ctx context.Context, name string) error {
	if !identRE.MatchString(name) {
		return fmt.Errorf("drop database: %q is not a lower-case identifier", name)
	}
	conn, err := connectRetry(ctx, s.SuperuserURL("postgres"), 10*time.Second)
	if err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, name))
	return err
}

// DatabaseExists reports whether database name exists on the primary.
func (s *Stack) DatabaseExists(ctx context.Context, name string) (bool, error) {
	conn, err := connectRetry(ctx, s.SuperuserURL("postgres"), 10*time.Second)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	var ok bool
	err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&ok)
	return ok, err
}

// WaitReplicaCaughtUp waits until the replica has replayed everything the
// primary had written when it was called.
func WaitReplicaCaughtUp(ctx context.Context, primaryURL, replicaURL string) error {
	p, err := connectRetry(ctx, primaryURL, 10*time.Second)
	if err != nil {
		return err
	}
	defer p.Close(context.Background())
	var lsn string
	if err := p.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
		return err
	}
	r, err := connectRetry(ctx, replicaURL, 30*time.Second)
	if err != nil {
		return err
	}
	defer r.Close(context.Background())
	for {
		var ok bool
		if err := r.QueryRow(ctx, `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn`, lsn).Scan(&ok); err != nil {
			return err
		}
		if ok {
			return nil
		}
		if err := ctxSleep(ctx, 10*time.Millisecond); err != nil {
			return fmt.Errorf("replica did not replay %s: %w", lsn, err)
		}
	}
}

// Exec runs one statement as the superuser in database db on the primary
// (for work that needs privileges the app role lacks).
func (s *Stack) Exec(ctx context.Context, db, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, s.SuperuserURL(db))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}
