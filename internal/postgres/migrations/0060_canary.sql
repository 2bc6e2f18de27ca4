-- The canary controller's state (internal/canary): one row per run, one per
-- stage entered, one per decision with everything the judge measured. A
-- controller killed mid-run resumes from canary_runs; the lease is a
-- session advisory lock (pg_try_advisory_lock(7312, hashtext('canary:' ||
-- endpoint))), so it ends with the controller's connection.

CREATE TABLE canary_runs (
    id               bigserial   PRIMARY KEY,
    endpoint         text        NOT NULL,
    state            text        NOT NULL CHECK (state IN ('running', 'paused', 'rolling_back', 'rolled_back', 'promoted', 'failed')),
    dry_run          boolean     NOT NULL DEFAULT false,
    stage_index      integer     NOT NULL DEFAULT 0,
    stage_percent    smallint    NOT NULL CHECK (stage_percent BETWEEN 0 AND 100),
    stage_started_at timestamptz,
    queue_ref        double precision,
    counters         jsonb       NOT NULL DEFAULT '{}',
    config           jsonb       NOT NULL,
    command          text        CHECK (command IN ('pause', 'resume', 'promote', 'abort')),
    trigger          text,
    reason           text,
    owner            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);

-- At most one live (not dry) run per endpoint.
CREATE UNIQUE INDEX canary_runs_live ON canary_runs (endpoint)
    WHERE state IN ('running', 'paused', 'rolling_back') AND NOT dry_run;
CREATE INDEX canary_runs_endpoint ON canary_runs (endpoint, id DESC);

CREATE TABLE canary_stages (
    id          bigserial   PRIMARY KEY,
    run_id      bigint      NOT NULL REFERENCES canary_runs ON DELETE CASCADE,
    stage_index integer     NOT NULL,
    percent     smallint    NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    outcome     text        -- advanced, promoted, rolled_back, interrupted
);
CREATE INDEX canary_stages_run ON canary_stages (run_id, id);

CREATE TABLE canary_decisions (
    id            bigserial   PRIMARY KEY,
    run_id        bigint      NOT NULL REFERENCES canary_runs ON DELETE CASCADE,
    at            timestamptz NOT NULL DEFAULT now(),
    stage_percent smallint    NOT NULL,
    verdict       text        NOT NULL,  -- pass, fail, inconclusive, error, or "" for an operator's action
    action        text        NOT NULL,  -- start, resume, hold, advance, rollback, rolled_back, promote, pause, ...
    trigger       text,
    reason        text,
    measurements  jsonb       NOT NULL DEFAULT '[]'
);
CREATE INDEX canary_decisions_run ON canary_decisions (run_id, id);
