package stacktest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Hang stops the stack component name with SIGSTOP: it keeps its sockets
// and answers nothing, as a hung server does. resume (SIGCONT) is also
// called in Cleanup, whatever happens (the package's tests share the stack).
func (s *Stack) Hang(tb testing.TB, name string) (resume func()) {
	tb.Helper()
	var once sync.Once
	resume = func() {
		once.Do(func() {
			if err := s.SignalComponent(name, syscall.SIGCONT); err != nil {
				tb.Errorf("resume %s: %v", name, err)
			}
		})
	}
	if err := s.SignalComponent(name, syscall.SIGSTOP); err != nil {
		tb.Fatalf("hang %s: %v", name, err)
	}
	tb.Cleanup(resume)
	return resume
}

// DelayReplay makes every replica apply each transaction d after its
// commit on the primary (recovery_min_apply_delay, set as the superuser and
// reloaded), so that each is a little behind but healthy — its breaker
// stays closed —, until Cleanup resets it. The setting is each whole
// replica's: tests that use it must not run in parallel with others.
func (s *Stack) DelayReplay(tb testing.TB, d time.Duration) {
	tb.Helper()
	tb.Cleanup(func() {
		if err := s.SetReplayDelay(0); err != nil {
			tb.Errorf("reset the replicas' apply delay: %v", err)
		}
	})
	if err := s.SetReplayDelay(d); err != nil {
		tb.Fatalf("delay replay: %v", err)
	}
}

// SetReplayDelay sets recovery_min_apply_delay to d on every replica (0:
// resets it) and reloads their configuration.
func (s *Stack) SetReplayDelay(d time.Duration) error {
	q := `ALTER SYSTEM RESET recovery_min_apply_delay`
	if d > 0 {
		q = fmt.Sprintf(`ALTER SYSTEM SET recovery_min_apply_delay = '%dms'`, d.Milliseconds())
	}
	var errs []error
	for i, u := range s.ReplicaSuperuserURLs("postgres") {
		if err := execReload(u, q); err != nil {
			errs = append(errs, fmt.Errorf("replica %d: %w", i+1, err))
		}
	}
	return errors.Join(errs...)
}

func execReload(url, q string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
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
