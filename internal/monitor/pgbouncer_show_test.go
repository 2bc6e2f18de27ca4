package monitor

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The column layouts of PgBouncer 1.18.0 (Debian 12), captured from the
// local stack's admin console (psql -A -F'|').
const (
	poolsHeader     = "database|user|cl_active|cl_waiting|cl_active_cancel_req|cl_waiting_cancel_req|sv_active|sv_active_cancel|sv_being_canceled|sv_idle|sv_used|sv_tested|sv_login|maxwait|maxwait_us|pool_mode"
	statsHeader     = "database|total_xact_count|total_query_count|total_received|total_sent|total_xact_time|total_query_time|total_wait_time|avg_xact_count|avg_query_count|avg_recv|avg_sent|avg_xact_time|avg_query_time|avg_wait_time"
	databasesHeader = "name|host|port|database|force_user|pool_size|min_pool_size|reserve_pool|pool_mode|max_connections|current_connections|paused|disabled"
)

// rowsOf turns captured lines into rows, as showRows returns them (a NULL
// is "").
func rowsOf(header string, lines ...string) []showRow {
	cols := strings.Split(header, "|")
	var out []showRow
	for _, l := range lines {
		vals := strings.Split(l, "|")
		r := showRow{}
		for i, c := range cols {
			r[c] = vals[i]
		}
		out = append(out, r)
	}
	return out
}

// without drops column col from a header and its lines (a PgBouncer that
// renamed or dropped it).
func without(col, header string, lines ...string) (string, []string) {
	cols := strings.Split(header, "|")
	i := -1
	for j, c := range cols {
		if c == col {
			i = j
		}
	}
	drop := func(s string) string {
		f := strings.Split(s, "|")
		return strings.Join(append(f[:i:i], f[i+1:]...), "|")
	}
	var out []string
	for _, l := range lines {
		out = append(out, drop(l))
	}
	return drop(header), out
}

// Captured: one client in a transaction on parley; the _ro entry has no
// pool yet; the admin console's own rows.
var (
	idlePools = []string{
		"parley|parley|1|0|0|0|1|0|0|0|0|0|0|0|0|transaction",
		"pgbouncer|pgbouncer|1|0|0|0|0|0|0|0|0|0|0|0|0|statement",
	}
	idleStats = []string{
		"parley|2|2|38|108|4326|4326|150578|0|0|6|19|2163|2163|27223",
		"pgbouncer|2|2|0|0|0|0|0|0|0|0|0|0|0|0",
	}
	idleDatabases = []string{
		"parley|127.0.0.1|45187|parley||20|0|0||0|1|0|0",
		"parley_ro|127.0.0.1|42013|parley||20|0|0||0|0|0|0",
		"pgbouncer||35083|pgbouncer|pgbouncer|2|0|0|statement|0|0|0|0",
	}
	// 24 clients of pool_size 20, four queued for 1.25 s; a second user's
	// pool of the same database; a test database of the "*" entry, in
	// SHOW POOLS but not in SHOW DATABASES.
	busyPools = []string{
		"parley|parley|20|4|0|0|20|0|0|0|0|0|0|1|250000|transaction",
		"parley|tool|2|0|0|0|2|0|0|1|0|0|0|0|0|transaction",
		"t_test_1|parley|3|0|0|0|3|0|0|2|0|0|1|0|0|transaction",
		"pgbouncer|pgbouncer|1|0|0|0|0|0|0|0|0|0|0|0|0|statement",
	}
	busyStats = []string{
		"parley|48|60|1142|3116|114992798|114992798|1696513|1|2|33|90|2395683|2395683|49266",
		"t_test_1|10|10|24|107|2006844|2006844|63457|0|0|0|3|2006844|2006844|1842",
		"pgbouncer|9|9|0|0|0|0|0|0|0|0|0|0|0|0",
	}
	defaultPool = rowsOf("key|value|default|changeable", "default_pool_size|10|20|yes", "pool_mode|transaction|session|yes")
)

func TestAggregatePgBouncer(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)
	noConfig := func() ([]showRow, error) {
		return nil, errors.New("SHOW CONFIG read although every pool's database is in SHOW DATABASES")
	}
	tests := []struct {
		name                   string
		pools, stats, dbs      []string
		config                 []showRow
		prev                   map[string]PgBouncerDatabase
		prevAt                 time.Time
		maxDBs                 int
		want                   []PgBouncerDatabase
		wantConfigRead         bool
		wantTotalX, wantTotalQ float64 // parley's counters kept for the next poll
	}{
		{
			name: "idle, captured", pools: idlePools, stats: idleStats, dbs: idleDatabases,
			want: []PgBouncerDatabase{
				{Database: "parley", PoolMode: "transaction", PoolSize: 20, Saturation: 0.05, ClientsActive: 1, ServersActive: 1, AvgWaitSeconds: 0.027223},
				{Database: "parley_ro", PoolSize: 20},
			},
			wantTotalX: 2, wantTotalQ: 2,
		},
		{
			name: "saturated, two user pools, a database only in SHOW POOLS", pools: busyPools, stats: busyStats, dbs: idleDatabases,
			config: defaultPool, wantConfigRead: true,
			want: []PgBouncerDatabase{
				// Saturation is the fullest user pool's (20/20), the counts the sums.
				{Database: "parley", PoolMode: "transaction", PoolSize: 20, Saturation: 1, ClientsActive: 22, ClientsWaiting: 4,
					ServersActive: 22, ServersIdle: 1, QueueWaitSeconds: 1.25, AvgWaitSeconds: 0.049266, TransactionsPerSecond: 1, QueriesPerSecond: 2},
				{Database: "parley_ro", PoolSize: 20},
				{Database: "t_test_1", PoolMode: "transaction", PoolSize: 10, Saturation: 0.3, ClientsActive: 3, ServersActive: 3,
					ServersIdle: 2, ServersLogin: 1, AvgWaitSeconds: 0.001842},
			},
			wantTotalX: 48, wantTotalQ: 60,
		},
		{
			name: "rates from the counters between two polls", pools: busyPools, stats: busyStats, dbs: idleDatabases, config: defaultPool, wantConfigRead: true,
			prev:   map[string]PgBouncerDatabase{"parley": {totalXacts: 28, totalQuery: 30}, "t_test_1": {totalXacts: 11, totalQuery: 0}},
			prevAt: t0.Add(-2 * time.Second),
			want: []PgBouncerDatabase{
				{Database: "parley", PoolMode: "transaction", PoolSize: 20, Saturation: 1, ClientsActive: 22, ClientsWaiting: 4,
					ServersActive: 22, ServersIdle: 1, QueueWaitSeconds: 1.25, AvgWaitSeconds: 0.049266, TransactionsPerSecond: 10, QueriesPerSecond: 15},
				{Database: "parley_ro", PoolSize: 20},
				// A counter that went backwards (PgBouncer restarted): its averages.
				{Database: "t_test_1", PoolMode: "transaction", PoolSize: 10, Saturation: 0.3, ClientsActive: 3, ServersActive: 3,
					ServersIdle: 2, ServersLogin: 1, AvgWaitSeconds: 0.001842},
			},
			wantTotalX: 48, wantTotalQ: 60,
		},
		{
			name: "capped to the busiest", pools: busyPools, stats: busyStats, dbs: idleDatabases, config: defaultPool, wantConfigRead: true, maxDBs: 2,
			want: []PgBouncerDatabase{
				{Database: "parley", PoolMode: "transaction", PoolSize: 20, Saturation: 1, ClientsActive: 22, ClientsWaiting: 4,
					ServersActive: 22, ServersIdle: 1, QueueWaitSeconds: 1.25, AvgWaitSeconds: 0.049266, TransactionsPerSecond: 1, QueriesPerSecond: 2},
				{Database: "t_test_1", PoolMode: "transaction", PoolSize: 10, Saturation: 0.3, ClientsActive: 3, ServersActive: 3,
					ServersIdle: 2, ServersLogin: 1, AvgWaitSeconds: 0.001842},
			},
			wantTotalX: 48, wantTotalQ: 60,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			read := false
			config := noConfig
			if tt.config != nil {
				config = func() ([]showRow, error) { read = true; return tt.config, nil }
			}
			maxDBs := tt.maxDBs
			if maxDBs == 0 {
				maxDBs = 50
			}
			sh := pgbouncerShow{pools: rowsOf(poolsHeader, tt.pools...), stats: rowsOf(statsHeader, tt.stats...),
				databases: rowsOf(databasesHeader, tt.dbs...), config: config}
			dbs, all, err := aggregatePgBouncer(sh, tt.prev, tt.prevAt, t0, maxDBs)
			if err != nil {
				t.Fatal(err)
			}
			if read != tt.wantConfigRead {
				t.Errorf("SHOW CONFIG read: %v, want %v", read, tt.wantConfigRead)
			}
			if len(dbs) != len(tt.want) {
				t.Fatalf("%d databases, want %d: %+v", len(dbs), len(tt.want), dbs)
			}
			for i, d := range dbs {
				w := tt.want[i]
				d.totalXacts, d.totalQuery = 0, 0
				if d != w {
					t.Errorf("database %d:\n got %+v\nwant %+v", i, d, w)
				}
			}
			if p := all["parley"]; p.totalXacts != tt.wantTotalX || p.totalQuery != tt.wantTotalQ {
				t.Errorf("parley's counters for the next poll: %v, %v; want %v, %v", p.totalXacts, p.totalQuery, tt.wantTotalX, tt.wantTotalQ)
			}
			if _, ok := all["pgbouncer"]; ok {
				t.Error("the admin pseudo-database is aggregated")
			}
		})
	}
}

// A column the aggregation needs that is missing (a PgBouncer version that
// renamed it) or not a number is an error, never a 0 that reads as an idle
// pool.
func TestAggregatePgBouncerRejects(t *testing.T) {
	type show struct {
		poolsH, statsH, dbsH string
		pools, stats, dbs    []string
		config               []showRow
	}
	base := func() show {
		return show{poolsHeader, statsHeader, databasesHeader, busyPools, busyStats, idleDatabases, defaultPool}
	}
	type rejectCase struct {
		name string
		mod  func(*show)
		want string
	}
	var tests []rejectCase
	for _, col := range []string{"database", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_login", "maxwait", "maxwait_us", "pool_mode"} {
		tests = append(tests, rejectCase{"SHOW POOLS without " + col, func(s *show) { s.poolsH, s.pools = without(col, s.poolsH, s.pools...) }, `SHOW POOLS: no column "` + col + `"`})
	}
	for _, col := range []string{"database", "avg_wait_time", "total_xact_count", "total_query_count", "avg_xact_count", "avg_query_count"} {
		tests = append(tests, rejectCase{"SHOW STATS without " + col, func(s *show) { s.statsH, s.stats = without(col, s.statsH, s.stats...) }, `SHOW STATS: no column "` + col + `"`})
	}
	for _, col := range []string{"name", "pool_size", "pool_mode"} {
		tests = append(tests, rejectCase{"SHOW DATABASES without " + col, func(s *show) { s.dbsH, s.dbs = without(col, s.dbsH, s.dbs...) }, `SHOW DATABASES: no column "` + col + `"`})
	}
	tests = append(tests, []rejectCase{
		{"a count that is not a number", func(s *show) {
			s.pools = []string{"parley|parley|20|many|0|0|20|0|0|0|0|0|0|1|250000|transaction"}
		}, `SHOW POOLS: column "cl_waiting" is "many", not a number`},
		{"a NULL count", func(s *show) {
			s.stats = []string{"parley|48|60|1142|3116|114992798|114992798|1696513|1|2|33|90|2395683|2395683|"}
		},
			`SHOW STATS: column "avg_wait_time" is "", not a number`},
		{"SHOW CONFIG without default_pool_size", func(s *show) { s.config = rowsOf("key|value|default|changeable", "pool_mode|transaction|session|yes") },
			"SHOW CONFIG: no default_pool_size"},
		{"SHOW CONFIG without value", func(s *show) { s.config = rowsOf("key|default|changeable", "default_pool_size|20|yes") },
			`SHOW CONFIG: no column "value"`},
	}...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base()
			tt.mod(&s)
			sh := pgbouncerShow{pools: rowsOf(s.poolsH, s.pools...), stats: rowsOf(s.statsH, s.stats...), databases: rowsOf(s.dbsH, s.dbs...),
				config: func() ([]showRow, error) { return s.config, nil }}
			dbs, _, err := aggregatePgBouncer(sh, nil, time.Time{}, time.Now(), 50)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("err = %v, want %q (databases %+v)", err, tt.want, dbs)
			}
		})
	}
}
