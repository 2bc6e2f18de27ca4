package postgres

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestRoleTimeouts: migration 0070's server-side bounds hold for the app
// role's sessions, through PgBouncer as the server connects, both in a
// database migrated from empty and in a test database copied from the
// package's template (CREATE DATABASE … TEMPLATE does not copy per-database
// role settings: the stack copies them, else every integration test would
// run without the timeouts the server has).
func TestRoleTimeouts(t *testing.T) {
	want := map[string]string{
		"statement_timeout":                   "1s",
		"lock_timeout":                        "500ms",
		"idle_in_transaction_session_timeout": "5s",
	}
	for _, tc := range []struct {
		name string
		db   func(testing.TB) stacktest.Database
	}{
		{"migrated from empty", emptyMigratedDB},
		{"copied from the template", migratedDB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := connect(t, tc.db(t).PgBouncerURL, pgx.QueryExecModeExec, 1)
			for name, v := range want {
				var got string
				if err := pool.QueryRow(testCtx(t), "SHOW "+name).Scan(&got); err != nil {
					t.Fatalf("SHOW %s: %v", name, err)
				}
				if got != v {
					t.Errorf("%s = %q, want %q", name, got, v)
				}
			}
		})
	}
}
