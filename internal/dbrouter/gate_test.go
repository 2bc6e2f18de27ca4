package dbrouter

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/postgres"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestCheckedReadOnReplica: a read held to a token that the replica's last
// probe had not replayed (the probers run once, at New) is served by the
// replica when it has replayed it by the time of the read — checked in the
// read's own round trip — and shows the write, whatever shape the read
// function has: rows read to the end without Close, QueryRow, several
// statements, Exec, SendBatch.
func TestCheckedReadOnReplica(t *testing.T) {
	db := setupDB(t)
	r, reg := newRouter(t, Config{PrimaryURL: db.PrimaryURL, ReplicaURLs: []string{db.ReplicaURL}, ProbeInterval: time.Hour})
	ctx := context.Background()
	if _, err := r.Primary().Exec(ctx, `INSERT INTO items (v) VALUES ('checked')`); err != nil {
		t.Fatal(err)
	}
	token, err := r.CommitLSN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.ReplicaCanServe(token) {
		t.Fatalf("the probe's view has the write already: the test needs a stale view")
	}
	rc, err := pgx.Connect(ctx, db.ReplicaURL)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close(ctx)
	stacktest.WaitFor(t, 10*time.Second, "the replica to replay the write", func() bool {
		var n int
		err := rc.QueryRow(ctx, `SELECT count(*) FROM items WHERE v = 'checked'`).Scan(&n)
		return err == nil && n == 1
	})

	shapes := map[string]func(ctx context.Context, q postgres.Querier) (int, error){
		"rows to the end": func(ctx context.Context, q postgres.Querier) (int, error) {
			rows, err := q.Query(ctx, `SELECT v FROM items WHERE v = $1`, "checked")
			if err != nil {
				return 0, err
			}
			n := 0
			for rows.Next() {
				n++
			}
			return n, rows.Err()
		},
		"rows closed early": func(ctx context.Context, q postgres.Querier) (int, error) {
			rows, err := q.Query(ctx, `SELECT v FROM items WHERE v = $1 UNION ALL SELECT 'x'`, "checked")
			if err != nil {
				return 0, err
			}
			rows.Next()
			rows.Close()
			return 1, rows.Err()
		},
		"query row, then another statement": func(ctx context.Context, q postgres.Querier) (int, error) {
			var n, one int
			if err := q.QueryRow(ctx, `SELECT count(*) FROM items WHERE v = $1`, "checked").Scan(&n); err != nil {
				return 0, err
			}
			if err := q.QueryRow(ctx, `SELECT count(*) FROM other`).Scan(&one); err != nil || one != 1 {
				return 0, errors.Join(err, errors.New("second statement"))
			}
			return n, nil
		},
		"no rows": func(ctx context.Context, q postgres.Querier) (int, error) {
			var v string
			err := q.QueryRow(ctx, `SELECT v FROM items WHERE v = 'none'`).Scan(&v)
			if errors.Is(err, pgx.ErrNoRows) {
				return 1, nil
			}
			return 0, err
		},
		"exec": func(ctx context.Context, q postgres.Querier) (int, error) {
			tag, err := q.Exec(ctx, `SELECT v FROM items WHERE v = 'checked'`)
			return int(tag.RowsAffected()), err
		},
		"batch": func(ctx context.Context, q postgres.Querier) (n int, err error) {
			b := &pgx.Batch{}
			b.Queue(`SELECT count(*) FROM items WHERE v = 'checked'`)
			br := q.SendBatch(ctx, b)
			err = br.QueryRow().Scan(&n)
			return n, errors.Join(err, br.Close())
		},
	}
	for name, read := range shapes {
		for range 3 { // the second and third on the same pooled connection
			var n int
			target, err := r.Read(ctx, "gate", replicaRoute(ReadYourWrites(token)), func(ctx context.Context, q postgres.Querier) (err error) {
				n, err = read(ctx, q)
				return err
			})
			if err != nil || target != TargetReplica || n != 1 {
				t.Fatalf("%s: target %s, n %d, err %v; want the replica, 1", name, target, n, err)
			}
		}
	}
	if v, _ := stacktest.Metric(t, reg, "parley_db_replica_position_checks_total", map[string]string{"endpoint": "gate", "outcome": CheckCaughtUp}); v != float64(3*len(shapes)) {
		t.Errorf("checks caught_up = %v, want %d", v, 3*len(shapes))
	}
	// A SQL error of the read itself comes back from the replica, not retried.
	target, err := r.Read(ctx, "gate", replicaRoute(ReadYourWrites(token)), func(ctx context.Context, q postgres.Querier) error {
		_, err := q.Exec(ctx, `SELECT * FROM no_such_table`)
		return err
	})
	if target != TargetReplica || err == nil || errors.Is(err, errReplicaBehind) {
		t.Errorf("SQL error on a checked read: %s %v", target, err)
	}
}

// TestCheckedReadWaitsForReplay: with replay paused, a read held to a newer
// token waits up to ReplicaWait and goes to the primary (token_ahead) —
// never returning what the replica read; a function that drops the gate's
// error does not get the replica's answer through either. With replay
// resumed while a read waits, the replica serves it (waited) and it shows
// the write.
func TestCheckedReadWaitsForReplay(t *testing.T) {
	db := setupDB(t)
	// Both routers probe once, before the pause: their breakers stay closed.
	r, reg := newRouter(t, Config{PrimaryURL: db.PrimaryURL, ReplicaURLs: []string{db.ReplicaURL}, ProbeInterval: time.Hour, ReplicaWait: 3 * time.Second})
	short, reg2 := newRouter(t, Config{PrimaryURL: db.PrimaryURL, ReplicaURLs: []string{db.ReplicaURL}, ProbeInterval: time.Hour, ReplicaWait: 30 * time.Millisecond})
	ctx := context.Background()
	stacktest.PauseReplay(t, db.ReplicaURL)
	if _, err := r.Primary().Exec(ctx, `INSERT INTO items (v) VALUES ('waited')`); err != nil {
		t.Fatal(err)
	}
	token, err := r.CommitLSN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count := func(ctx context.Context, q postgres.Querier) (n int, err error) {
		err = q.QueryRow(ctx, `SELECT count(*) FROM items WHERE v = 'waited'`).Scan(&n)
		return n, err
	}

	for range 5 {
		var n int
		start := time.Now()
		target, err := short.Read(ctx, "gate", replicaRoute(ReadYourWrites(token)), func(ctx context.Context, q postgres.Querier) (err error) {
			n, err = count(ctx, q)
			return err
		})
		if took := time.Since(start); err != nil || target != TargetPrimary || n != 1 || took < 30*time.Millisecond {
			t.Fatalf("paused replica: target %s n %d err %v after %v; want the primary, 1, after ReplicaWait", target, n, err, took)
		}
		// A function that swallows errors: its (empty) answer from the
		// replica is not used.
		var swallowed int
		target, err = short.Read(ctx, "gate", replicaRoute(ReadYourWrites(token)), func(ctx context.Context, q postgres.Querier) error {
			swallowed, _ = count(ctx, q)
			return nil
		})
		if err != nil || target != TargetPrimary || swallowed != 1 {
			t.Fatalf("swallowed error: target %s n %d err %v; want the primary, 1", target, swallowed, err)
		}
	}
	if v, _ := stacktest.Metric(t, reg2, "parley_db_replica_position_checks_total", map[string]string{"endpoint": "gate", "outcome": CheckBehind}); v != 10 {
		t.Errorf("checks behind = %v, want 10", v)
	}
	if v, _ := stacktest.Metric(t, reg2, "parley_db_reads_total", map[string]string{"endpoint": "gate", "target": "primary", "reason": ReasonTokenAhead}); v != 10 {
		t.Errorf("reads primary/token_ahead = %v, want 10", v)
	}

	done := make(chan struct{})
	var n int
	var target string
	var rerr error
	go func() {
		defer close(done)
		target, rerr = r.Read(ctx, "gate", replicaRoute(ReadYourWrites(token)), func(ctx context.Context, q postgres.Querier) (err error) {
			n, err = count(ctx, q)
			return err
		})
	}()
	time.Sleep(200 * time.Millisecond)
	stacktest.ResumeReplay(t, db.ReplicaURL)
	<-done
	if rerr != nil || target != TargetReplica || n != 1 {
		t.Fatalf("replay resumed during the wait: target %s n %d err %v; want the replica, 1", target, n, rerr)
	}
	if v, _ := stacktest.Metric(t, reg, "parley_db_replica_position_checks_total", map[string]string{"endpoint": "gate", "outcome": CheckWaited}); v != 1 {
		t.Errorf("checks waited = %v, want 1", v)
	}
}
