package integration

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/stack"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// replicaDelay is how far lagReplica keeps the replicas behind: long enough
// for a few reads after a write on a busy machine, well under the routers'
// lag threshold (5 s) and its half (2.5 s), under which a breaker closes.
const replicaDelay = 1500 * time.Millisecond

// lagReplica makes every replica apply each transaction replicaDelay after
// its commit (recovery_min_apply_delay, as the superuser) while a writer
// keeps WAL flowing in the service's database, and waits until every
// instance's router has every replica healthy with its breaker closed:
// replicas behind by replicaDelay that still serve reads, as lagging ones
// do — unlike paused replay, which takes a replica out of service within a
// probe interval, so that every read would go to the primary and a
// read-your-writes test would pass whatever the routing did. With several
// replicas all lag, so that whichever one a read is balanced onto is
// behind. Undone, and the replicas caught up, in Cleanup. The setting is
// each whole replica's: the package's tests do not run in parallel. The
// delay ends with t.
func (s *service) lagReplica(t *testing.T) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		stop()
		<-done
		if err := s.stack.SetReplayDelay(0); err != nil {
			t.Errorf("reset the replicas' apply delay: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, u := range s.db.ReplicaURLs {
			if err := stack.WaitReplicaCaughtUp(ctx, s.db.PrimaryURL, u); err != nil {
				t.Errorf("a replica after its delay: %v", err)
			}
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
	if err := s.stack.SetReplayDelay(replicaDelay); err != nil {
		t.Fatalf("delay the replicas: %v", err)
	}
	// Replay stands still while the first delay runs out, which may open
	// the breakers for a moment: wait for every router to serve from every
	// replica again, and for the lag to show on each.
	stacktest.WaitFor(t, 15*time.Second, "every instance's replicas lagging, yet serving", func() bool {
		for _, c := range s.instances {
			st := c.router.Status()
			if len(st) != len(s.db.ReplicaURLs) {
				return false
			}
			for _, r := range st {
				if r.Breaker != "closed" || r.LagSeconds < replicaDelay.Seconds()/2 {
					return false
				}
			}
		}
		return true
	})
}

// replayed waits until every replica has replayed everything written so far
// (replicaDelay and more while lagReplica holds them back).
func (s *service) replayed(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, u := range s.db.ReplicaURLs {
		if err := stack.WaitReplicaCaughtUp(ctx, s.db.PrimaryURL, u); err != nil {
			t.Fatal(err)
		}
	}
}
