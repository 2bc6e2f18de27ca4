package canary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/parley-chat/parley/internal/chat"
)

// RunStatus is one run as `parley canary status` shows it.
type RunStatus struct {
	Run       *Run       `json:"run"`
	Stages    []Stage    `json:"stages"`
	Decisions []Decision `json:"decisions"`
	// Controller names the session holding the endpoint's lease ("" when
	// no controller drives it: a live run then waits to be resumed).
	Controller string `json:"controller,omitempty"`
}

// Status returns the latest run of each endpoint (or of one), live ones
// with the controller driving them, each with its stages and last
// decisions.
func Status(ctx context.Context, store *Store, endpoint string, decisions int) ([]RunStatus, error) {
	endpoints := chat.RolloutEndpoints()
	if endpoint != "" {
		if _, ok := EndpointRoutes[endpoint]; !ok {
			return nil, fmt.Errorf("%w: endpoint %q: want one of %v", ErrConfig, endpoint, endpoints)
		}
		endpoints = []string{endpoint}
	}
	var out []RunStatus
	for _, ep := range endpoints {
		runs, err := store.Runs(ctx, ep, 1)
		if err != nil {
			return nil, err
		}
		if len(runs) == 0 {
			continue
		}
		st := RunStatus{Run: runs[0]}
		if st.Stages, err = store.Stages(ctx, st.Run.ID); err != nil {
			return nil, err
		}
		if st.Decisions, err = store.Decisions(ctx, st.Run.ID, decisions); err != nil {
			return nil, err
		}
		if st.Run.Live() {
			if st.Controller, err = store.LeaseHolder(ctx, ep); err != nil {
				return nil, err
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// Command asks the endpoint's live run to pause, resume, promote (skip to
// 100%) or abort (roll back now). The controller driving it carries the
// command out within a second; when none does, Command does it itself
// (taking the lease): promote and abort then change the rollout through
// admin. It returns what was done.
func Command(ctx context.Context, store *Store, admin *AdminClient, endpoint, cmd, owner string) (string, error) {
	switch cmd {
	case CmdPause, CmdResume, CmdPromote, CmdAbort:
	default:
		return "", fmt.Errorf("%w: unknown command %q", ErrConfig, cmd)
	}
	if _, ok := EndpointRoutes[endpoint]; !ok {
		return "", fmt.Errorf("%w: endpoint %q: want one of %v", ErrConfig, endpoint, chat.RolloutEndpoints())
	}
	runID, err := store.SetCommand(ctx, endpoint, cmd)
	if err != nil {
		return "", err
	}
	lease, err := store.Acquire(ctx, endpoint, owner)
	if errors.Is(err, ErrLeaseHeld) {
		// A controller drives the run: it polls every second.
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			pending, err := store.PendingCommand(ctx, runID)
			if err != nil {
				return "", err
			}
			if pending == "" {
				return fmt.Sprintf("run %d: the controller took the %s command", runID, cmd), nil
			}
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
		return "", fmt.Errorf("run %d: the controller has not taken the %s command after 15s (it stays queued)", runID, cmd)
	}
	if err != nil {
		return "", err
	}
	defer lease.Release()
	taken, err := store.TakeCommand(ctx, runID)
	if err != nil {
		return "", err
	}
	r, err := store.Run(ctx, runID)
	if err != nil {
		return "", err
	}
	if taken == "" || !r.Live() {
		// A controller took it (and may have ended the run) between the
		// command and the lease.
		return fmt.Sprintf("run %d: the controller took the %s command; state %s at %d%%", runID, cmd, r.State, r.StagePercent), nil
	}
	note := func(action, trigger, reason string) {
		_ = store.AddDecision(ctx, &Decision{RunID: r.ID, StagePercent: r.StagePercent, Action: action, Trigger: trigger, Reason: reason})
	}
	now := time.Now()
	switch cmd {
	case CmdPause:
		r.State = StatePaused
		note("pause", "", "paused by an operator (no controller running)")
	case CmdResume:
		if r.State == StatePaused {
			r.State = StateRunning
		}
		r.Counters.InconclusiveSince = nil
		note("resume", "", "resumed by an operator; start 'parley canary run' to drive it")
	case CmdAbort:
		t, reason := TriggerAbort, "aborted by an operator"
		r.State, r.Trigger, r.Reason = StateRollingBack, &t, &reason
		if err := store.SaveRun(ctx, r); err != nil {
			return "", err
		}
		zero := 0
		if _, err := admin.Set(ctx, endpoint, chat.RolloutUpdate{Percent: &zero}); err != nil {
			return "", fmt.Errorf("abort: %w (the run stays rolling_back: 'parley canary run' finishes it)", err)
		}
		r.State, r.StagePercent, r.FinishedAt = StateRolledBack, 0, &now
		_ = store.EndOpenStages(ctx, r.ID, "rolled_back")
		note("rolled_back", TriggerAbort, "aborted by an operator: at 0%")
	case CmdPromote:
		var cfg storedConfig
		if err := json.Unmarshal(r.Config, &cfg); err != nil {
			return "", fmt.Errorf("run %d configuration: %w", r.ID, err)
		}
		hundred := 100
		if _, err := admin.Set(ctx, endpoint, chat.RolloutUpdate{Percent: &hundred, Cache: &cfg.Optimized.Cache, Replica: &cfg.Optimized.Replica}); err != nil {
			return "", fmt.Errorf("promote: %w", err)
		}
		r.State, r.StagePercent, r.StageIndex, r.FinishedAt = StatePromoted, 100, len(cfg.Stages)-1, &now
		_ = store.EndOpenStages(ctx, r.ID, "promoted")
		note("promoted", "", "promoted by an operator: skipped to 100%")
	}
	if err := store.SaveRun(ctx, r); err != nil {
		return "", err
	}
	return fmt.Sprintf("run %d: %s done (no controller was running); state %s at %d%%", r.ID, cmd, r.State, r.StagePercent), nil
}
