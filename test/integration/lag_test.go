package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/stack"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// replicaDelay is how far lagReplica keeps the replica behind: long enough
// for a few reads after a write on a busy machine, well under the routers'
// lag threshold (5 s) and its half (2.5 s), under which a breaker closes.
const replicaDelay = 1500 * time.Millisecond

// lagReplica makes the replica apply every transaction replicaDelay after
// its commit (recovery_min_apply_delay, as the superuser) while a writer
// keeps WAL flowing in the service's database, and waits until every
// instance's router has the replica healthy with its breaker closed: a
// replica behind by replicaDelay that still serves reads, as a lagging one
// does — unlike paused replay, which takes the replica out of service
// within a probe interval, so that every read would go to the primary and
// a read-your-writes test would pass whatever the routing did. Undone, and
// the replica caught up, in Cleanup. The setting is the whole replica's:
// the package's tests do not run in parallel. The delay ends with t.
func (s *service) lagReplica(t *testing.T) {
	t.Helper()
	set := func(q string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, s.stack.ReplicaSuperuserURL("postgres"))
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, q); err != nil {
			return err
		}
		_, err = conn.Exec(ctx, `SELECT pg_reload_conf()`)
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		stop()
		<-done
		if err := set(`ALTER SYSTEM RESET recovery_min_apply_delay`); err != nil {
			t.Errorf("reset the replica's apply delay: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := stack.WaitReplicaCaughtUp(ctx, s.db.PrimaryURL, s.db.ReplicaURL); err != nil {
			t.Errorf("the replica after its delay: %v", err)
		}
	})
	// The writer: a commit every 50 ms, so that replay keeps moving (a
	// replay that does not move while WAL waits reads as stalled).
	go func() {
		defer close(done)
		conn, err := pgx.Connect(ctx, s.db.PrimaryURL)
		if err != nil {
			t.Errorf("lag writer: %v", err)
			return
		}
		defer conn.Close(context.Background())
		for ctx.Err() == nil {
			if _, err := conn.Exec(ctx, `SELECT txid_current()`); err != nil && ctx.Err() == nil {
				t.Errorf("lag writer: %v", err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	if err := set(fmt.Sprintf(`ALTER SYSTEM SET recovery_min_apply_delay = '%dms'`, replicaDelay.Milliseconds())); err != nil {
		t.Fatalf("delay the replica: %v", err)
	}
	// Replay stands still while the first delay runs out, which may open
	// the breakers for a moment: wait for every router to serve from the
	// replica again, and for the lag to show.
	stacktest.WaitFor(t, 15*time.Second, "every instance's replica lagging, yet serving", func() bool {
		for _, c := range s.instances {
			st := c.router.Status()
			if len(st) != 1 || st[0].Breaker != "closed" || st[0].LagSeconds < replicaDelay.Seconds()/2 {
				return false
			}
		}
		return true
	})
}

// replayed waits until the replica has replayed everything written so far
// (replicaDelay and more while lagReplica holds it back).
func (s *service) replayed(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := stack.WaitReplicaCaughtUp(ctx, s.db.PrimaryURL, s.db.ReplicaURL); err != nil {
		t.Fatal(err)
	}
}
