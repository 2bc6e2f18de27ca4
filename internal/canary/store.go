package canary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Run states.
const (
	StateRunning     = "running"
	StatePaused      = "paused"
	StateRollingBack = "rolling_back"
	StateRolledBack  = "rolled_back"
	StatePromoted    = "promoted"
	StateFailed      = "failed"
)

// Operator commands, written to the run's row by the verbs and carried out
// by the controller that holds the lease (or by the verb itself when none
// does).
const (
	CmdPause   = "pause"
	CmdResume  = "resume"
	CmdPromote = "promote"
	CmdAbort   = "abort"
)

// Run is one canary of one endpoint, as stored in canary_runs.
type Run struct {
	ID             int64           `json:"id"`
	Endpoint       string          `json:"endpoint"`
	State          string          `json:"state"`
	DryRun         bool            `json:"dry_run"`
	StageIndex     int             `json:"stage_index"`
	StagePercent   int             `json:"stage_percent"`
	StageStartedAt *time.Time      `json:"stage_started_at"`
	QueueRef       *float64        `json:"queue_ref_seconds"`
	Counters       Counters        `json:"counters"`
	Config         json.RawMessage `json:"config"`
	Command        *string         `json:"command,omitempty"`
	Trigger        *string         `json:"trigger"`
	Reason         *string         `json:"reason"`
	Owner          string          `json:"owner"`
	CreatedAt      time.Time       `json:"created_at"`
	UpdatedAt      time.Time       `json:"updated_at"`
	FinishedAt     *time.Time      `json:"finished_at"`
}

// Live reports a run that a controller drives (or should resume).
func (r *Run) Live() bool {
	return r.State == StateRunning || r.State == StatePaused || r.State == StateRollingBack
}

// Counters are the stage's running counts, saved with every check so that
// a resumed controller goes on from them.
type Counters struct {
	Checks            int        `json:"checks"`             // checks in this stage
	Passes            int        `json:"passes"`             // conclusive passing checks in this stage
	Fails             int        `json:"fails"`              // failed checks in a row
	Errors            int        `json:"errors"`             // checks in a row that could not query
	InconclusiveSince *time.Time `json:"inconclusive_since"` // first of the current inconclusive streak
	Saturated         []bool     `json:"saturated"`          // saturation outcomes of the last N PgBouncer polls
	SaturationPoll    float64    `json:"saturation_poll"`    // the last poll counted (its timestamp)
}

// Decision is one stored decision: a check and what was done about it, or
// an operator's action.
type Decision struct {
	ID           int64           `json:"id"`
	RunID        int64           `json:"run_id"`
	At           time.Time       `json:"at"`
	StagePercent int             `json:"stage_percent"`
	Verdict      string          `json:"verdict"`
	Action       string          `json:"action"`
	Trigger      string          `json:"trigger,omitempty"`
	Reason       string          `json:"reason,omitempty"`
	Measurements json.RawMessage `json:"measurements"`
}

// Store keeps runs, stages and decisions in PostgreSQL (migration
// 0060_canary.sql).
type Store struct {
	url  string
	pool *pgxpool.Pool
}

// OpenStore connects to the database at url: the primary, direct (the
// lease is a session advisory lock, which PgBouncer's transaction pooling
// does not keep).
func OpenStore(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%w: database URL: %w", ErrConfig, err)
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	var ok bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('canary_runs') IS NOT NULL`).Scan(&ok); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database: %w", err)
	}
	if !ok {
		pool.Close()
		return nil, errors.New("database: no canary_runs table: run 'parley migrate' first")
	}
	return &Store{url: url, pool: pool}, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// ErrLeaseHeld: another controller drives the endpoint.
var ErrLeaseHeld = errors.New("another controller holds the lease of this endpoint")

const leaseClass = 7312

// Lease is the right to drive one endpoint: a session advisory lock held on
// a connection of its own, released when it closes (a killed controller's
// connection closes with it).
type Lease struct {
	conn     *pgx.Conn
	endpoint string
}

// Acquire takes the endpoint's lease or fails at once with ErrLeaseHeld,
// naming the holder.
func (s *Store) Acquire(ctx context.Context, endpoint, owner string) (*Lease, error) {
	cfg, err := pgx.ParseConfig(s.url)
	if err != nil {
		return nil, fmt.Errorf("%w: database URL: %w", ErrConfig, err)
	}
	cfg.RuntimeParams["application_name"] = truncate("parley canary "+owner, 63)
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("lease connection: %w", err)
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext('canary:' || $2))`, leaseClass, endpoint).Scan(&got); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("lease: %w", err)
	}
	if !got {
		conn.Close(context.Background())
		holder, _ := s.LeaseHolder(ctx, endpoint)
		if holder == "" {
			holder = "unknown"
		}
		return nil, fmt.Errorf("%w (%s, held by %s)", ErrLeaseHeld, endpoint, holder)
	}
	return &Lease{conn: conn, endpoint: endpoint}, nil
}

// Check verifies that the lease's session is still alive.
func (l *Lease) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := l.conn.Ping(ctx); err != nil {
		return fmt.Errorf("lost the lease of %s: %w", l.endpoint, err)
	}
	return nil
}

// Release unlocks and closes the lease's connection.
func (l *Lease) Release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = l.conn.Exec(ctx, `SELECT pg_advisory_unlock($1, hashtext('canary:' || $2))`, leaseClass, l.endpoint)
	_ = l.conn.Close(ctx)
}

// LeaseHolder names the session holding the endpoint's lease ("" if none).
func (s *Store) LeaseHolder(ctx context.Context, endpoint string) (string, error) {
	var who string
	err := s.pool.QueryRow(ctx, `
SELECT coalesce(a.application_name, '') || ' (backend pid ' || l.pid || ', since ' || to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS') || ')'
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int::oid
  AND l.objid = hashtext('canary:' || $2)::oid AND l.objsubid = 2
LIMIT 1`, leaseClass, endpoint).Scan(&who)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return who, err
}

const runColumns = `id, endpoint, state, dry_run, stage_index, stage_percent, stage_started_at, queue_ref,
	counters, config, command, trigger, reason, coalesce(owner, ''), created_at, updated_at, finished_at`

func scanRun(row pgx.Row) (*Run, error) {
	var r Run
	var counters []byte
	var pct int16
	err := row.Scan(&r.ID, &r.Endpoint, &r.State, &r.DryRun, &r.StageIndex, &pct, &r.StageStartedAt, &r.QueueRef,
		&counters, &r.Config, &r.Command, &r.Trigger, &r.Reason, &r.Owner, &r.CreatedAt, &r.UpdatedAt, &r.FinishedAt)
	if err != nil {
		return nil, err
	}
	r.StagePercent = int(pct)
	if err := json.Unmarshal(counters, &r.Counters); err != nil {
		return nil, fmt.Errorf("run %d counters: %w", r.ID, err)
	}
	return &r, nil
}

// LiveRun returns the endpoint's live run (not a dry run), or nil.
func (s *Store) LiveRun(ctx context.Context, endpoint string) (*Run, error) {
	r, err := scanRun(s.pool.QueryRow(ctx, `SELECT `+runColumns+` FROM canary_runs
WHERE endpoint = $1 AND NOT dry_run AND state IN ('running', 'paused', 'rolling_back') ORDER BY id DESC LIMIT 1`, endpoint))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read run: %w", err)
	}
	return r, nil
}

// Runs returns the latest runs, of one endpoint or ("") of all, newest first.
func (s *Store) Runs(ctx context.Context, endpoint string, limit int) ([]*Run, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+runColumns+` FROM canary_runs
WHERE $1 = '' OR endpoint = $1 ORDER BY id DESC LIMIT $2`, endpoint, limit)
	if err != nil {
		return nil, fmt.Errorf("read runs: %w", err)
	}
	defer rows.Close()
	var out []*Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// CreateRun inserts r and sets its ID and times.
func (s *Store) CreateRun(ctx context.Context, r *Run) error {
	counters, _ := json.Marshal(r.Counters)
	err := s.pool.QueryRow(ctx, `INSERT INTO canary_runs
  (endpoint, state, dry_run, stage_index, stage_percent, stage_started_at, queue_ref, counters, config, owner)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id, created_at, updated_at`,
		r.Endpoint, r.State, r.DryRun, r.StageIndex, r.StagePercent, r.StageStartedAt, r.QueueRef, string(counters), string(r.Config), r.Owner,
	).Scan(&r.ID, &r.CreatedAt, &r.UpdatedAt)
	if err != nil {
		return fmt.Errorf("create run: %w", err)
	}
	return nil
}

// SaveRun writes r's mutable fields (not the command, which the verbs own).
func (s *Store) SaveRun(ctx context.Context, r *Run) error {
	counters, _ := json.Marshal(r.Counters)
	err := s.pool.QueryRow(ctx, `UPDATE canary_runs SET state = $2, stage_index = $3, stage_percent = $4,
  stage_started_at = $5, queue_ref = $6, counters = $7, trigger = $8, reason = $9, owner = $10,
  finished_at = $11, updated_at = now()
WHERE id = $1 RETURNING updated_at`,
		r.ID, r.State, r.StageIndex, r.StagePercent, r.StageStartedAt, r.QueueRef, string(counters), r.Trigger, r.Reason, r.Owner, r.FinishedAt,
	).Scan(&r.UpdatedAt)
	if err != nil {
		return fmt.Errorf("save run %d: %w", r.ID, err)
	}
	return nil
}

// StartStage records entering a stage and returns the stage's id.
func (s *Store) StartStage(ctx context.Context, runID int64, index, percent int) (int64, error) {
	var id int64
	err := s.pool.QueryRow(ctx, `INSERT INTO canary_stages (run_id, stage_index, percent) VALUES ($1, $2, $3) RETURNING id`,
		runID, index, percent).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("record stage: %w", err)
	}
	return id, nil
}

// EndStage records how a stage ended.
func (s *Store) EndStage(ctx context.Context, stageID int64, outcome string) error {
	if stageID == 0 {
		return nil
	}
	_, err := s.pool.Exec(ctx, `UPDATE canary_stages SET ended_at = now(), outcome = $2 WHERE id = $1 AND ended_at IS NULL`, stageID, outcome)
	if err != nil {
		return fmt.Errorf("record stage end: %w", err)
	}
	return nil
}

// EndOpenStages closes the stages a killed controller left open.
func (s *Store) EndOpenStages(ctx context.Context, runID int64, outcome string) error {
	_, err := s.pool.Exec(ctx, `UPDATE canary_stages SET ended_at = now(), outcome = $2 WHERE run_id = $1 AND ended_at IS NULL`, runID, outcome)
	return err
}

// Stage is one stored stage of a run.
type Stage struct {
	Index     int        `json:"index"`
	Percent   int        `json:"percent"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at"`
	Outcome   *string    `json:"outcome"`
}

// Stages returns a run's stages in order.
func (s *Store) Stages(ctx context.Context, runID int64) ([]Stage, error) {
	rows, err := s.pool.Query(ctx, `SELECT stage_index, percent, started_at, ended_at, outcome FROM canary_stages WHERE run_id = $1 ORDER BY id`, runID)
	if err != nil {
		return nil, fmt.Errorf("read stages: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Stage, error) {
		var st Stage
		var pct int16
		err := row.Scan(&st.Index, &pct, &st.StartedAt, &st.EndedAt, &st.Outcome)
		st.Percent = int(pct)
		return st, err
	})
}

// AddDecision stores d and sets its ID and time.
func (s *Store) AddDecision(ctx context.Context, d *Decision) error {
	if d.Measurements == nil {
		d.Measurements = json.RawMessage("[]")
	}
	err := s.pool.QueryRow(ctx, `INSERT INTO canary_decisions (run_id, stage_percent, verdict, action, trigger, reason, measurements)
VALUES ($1, $2, $3, $4, nullif($5, ''), nullif($6, ''), $7) RETURNING id, at`,
		d.RunID, d.StagePercent, d.Verdict, d.Action, d.Trigger, d.Reason, string(d.Measurements)).Scan(&d.ID, &d.At)
	if err != nil {
		return fmt.Errorf("store decision: %w", err)
	}
	return nil
}

// Decisions returns a run's last decisions, oldest first.
func (s *Store) Decisions(ctx context.Context, runID int64, limit int) ([]Decision, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, run_id, at, stage_percent, verdict, action, coalesce(trigger, ''), coalesce(reason, ''), measurements
FROM (SELECT * FROM canary_decisions WHERE run_id = $1 ORDER BY id DESC LIMIT $2) d ORDER BY id`, runID, limit)
	if err != nil {
		return nil, fmt.Errorf("read decisions: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Decision, error) {
		var d Decision
		var pct int16
		err := row.Scan(&d.ID, &d.RunID, &d.At, &pct, &d.Verdict, &d.Action, &d.Trigger, &d.Reason, &d.Measurements)
		d.StagePercent = int(pct)
		return d, err
	})
}

// SetCommand asks the endpoint's live run to carry out cmd and returns the
// run's id (ErrNoLiveRun when there is none).
func (s *Store) SetCommand(ctx context.Context, endpoint, cmd string) (int64, error) {
	var id int64
	err := s.pool.QueryRow(ctx, `UPDATE canary_runs SET command = $2, updated_at = now()
WHERE endpoint = $1 AND NOT dry_run AND state IN ('running', 'paused', 'rolling_back') RETURNING id`, endpoint, cmd).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w for %s", ErrNoLiveRun, endpoint)
	}
	if err != nil {
		return 0, fmt.Errorf("set command: %w", err)
	}
	return id, nil
}

// ErrNoLiveRun: the endpoint has no run to act on.
var ErrNoLiveRun = errors.New("no live canary run")

// TakeCommand returns and clears the run's pending command ("" if none).
func (s *Store) TakeCommand(ctx context.Context, runID int64) (string, error) {
	var cmd string
	err := s.pool.QueryRow(ctx, `UPDATE canary_runs r SET command = NULL
FROM (SELECT id, command FROM canary_runs WHERE id = $1 AND command IS NOT NULL FOR UPDATE) old
WHERE r.id = old.id RETURNING old.command`, runID).Scan(&cmd)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read command: %w", err)
	}
	return cmd, nil
}

// PendingCommand returns the run's command not yet taken ("" if none).
func (s *Store) PendingCommand(ctx context.Context, runID int64) (string, error) {
	var cmd *string
	if err := s.pool.QueryRow(ctx, `SELECT command FROM canary_runs WHERE id = $1`, runID).Scan(&cmd); err != nil {
		return "", err
	}
	if cmd == nil {
		return "", nil
	}
	return *cmd, nil
}

// Run reads one run.
func (s *Store) Run(ctx context.Context, id int64) (*Run, error) {
	r, err := scanRun(s.pool.QueryRow(ctx, `SELECT `+runColumns+` FROM canary_runs WHERE id = $1`, id))
	if err != nil {
		return nil, fmt.Errorf("read run %d: %w", id, err)
	}
	return r, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
