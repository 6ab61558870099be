-- Trainer: runs (one per job attempt), their logs and per-step metrics.
--
-- A run is claimed by one worker with FOR UPDATE SKIP LOCKED and held by a lease the worker renews; an expired
-- lease means the worker vanished and any trainer process may reap the run. At most one run per job succeeds.

CREATE TABLE runs (
    run_id              TEXT PRIMARY KEY,
    job_id              TEXT NOT NULL,
    attempt             INTEGER NOT NULL,
    model               TEXT NOT NULL,
    state               TEXT NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'lost', 'cancelled', 'superseded')),
    request             JSONB NOT NULL,          -- the training.requested envelope (cause of the run's events)
    entrypoint          TEXT NOT NULL,
    params              JSONB NOT NULL,
    datasets            JSONB NOT NULL,
    code_version        TEXT NOT NULL,
    priority            INTEGER NOT NULL DEFAULT 0,
    timeout_s           DOUBLE PRECISION NOT NULL,
    memory_limit_mb     INTEGER,
    worker              TEXT,
    lease_expires_at    TIMESTAMPTZ,
    stop_requested      TEXT,                    -- why the worker must stop the run (cancelled / superseded)
    queued_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at          TIMESTAMPTZ,
    finished_at         TIMESTAMPTZ,
    duration_s          DOUBLE PRECISION,
    exit_code           INTEGER,
    failure_reason      TEXT,
    error               TEXT NOT NULL DEFAULT '',
    metrics             JSONB NOT NULL DEFAULT '{}'::jsonb,
    artifact_digest     TEXT,
    artifact_uri        TEXT,
    artifact_format     TEXT,
    artifact_size_bytes BIGINT,
    profile_digest      TEXT,
    profile_uri         TEXT,
    profile_size_bytes  BIGINT,
    signature           JSONB NOT NULL DEFAULT '[]'::jsonb,
    environment         JSONB,
    completed_event_id  TEXT,
    log_lines           INTEGER NOT NULL DEFAULT 0,
    log_dropped         INTEGER NOT NULL DEFAULT 0,
    metric_points       INTEGER NOT NULL DEFAULT 0,
    UNIQUE (job_id, attempt)
);
CREATE UNIQUE INDEX runs_one_success_per_job ON runs (job_id) WHERE state = 'succeeded';
CREATE INDEX runs_queue ON runs (priority DESC, queued_at) WHERE state = 'queued';
CREATE INDEX runs_leases ON runs (lease_expires_at) WHERE state = 'running';
CREATE INDEX runs_by_job ON runs (job_id);
CREATE INDEX runs_by_model ON runs (model, run_id);

CREATE TABLE run_logs (
    run_id  TEXT NOT NULL REFERENCES runs (run_id),
    seq     INTEGER NOT NULL,
    stream  TEXT NOT NULL,
    line    TEXT NOT NULL,
    at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE run_metrics (
    id      BIGSERIAL PRIMARY KEY,
    run_id  TEXT NOT NULL REFERENCES runs (run_id),
    name    TEXT NOT NULL,
    step    BIGINT,
    value   DOUBLE PRECISION NOT NULL,
    at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX run_metrics_by_run ON run_metrics (run_id, name, id);
