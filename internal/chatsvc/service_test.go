package chatsvc

import (
	"context"
	"testing"
	"time"
)

// TestWriteContext: a write's context outlives its client's cancellation
// but not the request's deadline, nor the database budget.
func TestWriteContext(t *testing.T) {
	const budget = 1500 * time.Millisecond
	s := &Service{cfg: Config{DBBudget: budget}}
	for _, tc := range []struct {
		name     string
		deadline time.Duration // the request's, from now; 0: none
		want     time.Duration // the write's, from now
	}{
		{"no request deadline: the budget", 0, budget},
		{"a request deadline past the budget: the budget", 10 * time.Second, budget},
		{"a request deadline within the budget: the request's", 200 * time.Millisecond, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			if tc.deadline > 0 {
				ctx, cancel = context.WithTimeout(context.Background(), tc.deadline)
			}
			start := time.Now()
			wctx, wcancel := s.writeContext(ctx)
			defer wcancel()
			cancel() // the client hangs up
			if wctx.Err() != nil {
				t.Fatalf("the write's context ended with its client's: %v", wctx.Err())
			}
			d, ok := wctx.Deadline()
			if !ok {
				t.Fatal("the write's context has no deadline")
			}
			// ±500 ms: wide for a stalled machine, narrow enough to tell the
			// cases apart (200 ms, 1.5 s, 10 s).
			if got := d.Sub(start); got > tc.want+500*time.Millisecond || got < tc.want-500*time.Millisecond {
				t.Errorf("the write's deadline is %v from now, want %v", got, tc.want)
			}
		})
	}
}
