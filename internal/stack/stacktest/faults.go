package stacktest

import (
	"context"
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

// DelayReplay makes the replica apply each transaction d after its commit
// on the primary (recovery_min_apply_delay, set as the superuser and
// reloaded), so that it is a little behind but healthy — its breaker stays
// closed —, until Cleanup resets it. The setting is the whole replica's:
// tests that use it must not run in parallel with others.
func (s *Stack) DelayReplay(tb testing.TB, d time.Duration) {
	tb.Helper()
	set := func(value string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, s.ReplicaSuperuserURL("postgres"))
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		q := `ALTER SYSTEM RESET recovery_min_apply_delay`
		if value != "" {
			q = fmt.Sprintf(`ALTER SYSTEM SET recovery_min_apply_delay = '%s'`, value)
		}
		if _, err := conn.Exec(ctx, q); err != nil {
			return err
		}
		_, err = conn.Exec(ctx, `SELECT pg_reload_conf()`)
		return err
	}
	tb.Cleanup(func() {
		if err := set(""); err != nil {
			tb.Errorf("reset the replica's apply delay: %v", err)
		}
	})
	if err := set(fmt.Sprintf("%dms", d.Milliseconds())); err != nil {
		tb.Fatalf("delay replay: %v", err)
	}
}
