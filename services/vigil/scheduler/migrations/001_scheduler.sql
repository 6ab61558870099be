-- Scheduler: retraining policies, the latest dataset versions it has seen, durable debounce windows (triggers),
-- jobs with their state machine, and every transition (applied or refused).

CREATE TABLE policies (
    model           TEXT PRIMARY KEY,
    datasets        TEXT[] NOT NULL,
    entrypoint      TEXT NOT NULL,
    params          JSONB NOT NULL DEFAULT '{}'::jsonb,
    code_version    TEXT NOT NULL,
    debounce_s      DOUBLE PRECISION NOT NULL CHECK (debounce_s >= 0),
    cron            TEXT,
    next_cron_at    TIMESTAMPTZ,
    priority        INTEGER NOT NULL DEFAULT 0,
    max_concurrent  INTEGER NOT NULL DEFAULT 1 CHECK (max_concurrent >= 1),
    cooldown_s      DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (cooldown_s >= 0),
    cooldown_until  TIMESTAMPTZ,
    max_attempts    INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    backoff_base_s  DOUBLE PRECISION NOT NULL DEFAULT 30 CHECK (backoff_base_s >= 0),
    backoff_max_s   DOUBLE PRECISION NOT NULL DEFAULT 3600 CHECK (backoff_max_s >= 0),
    timeout_s       DOUBLE PRECISION NOT NULL DEFAULT 3600 CHECK (timeout_s > 0),
    memory_limit_mb INTEGER CHECK (memory_limit_mb >= 1),
    enabled         BOOLEAN NOT NULL DEFAULT true,
    revision        INTEGER NOT NULL DEFAULT 1,
    updated_by      TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX policies_by_dataset ON policies USING gin (datasets);
CREATE INDEX policies_cron_due ON policies (next_cron_at) WHERE cron IS NOT NULL AND enabled;

-- Latest registered version of each dataset (what a job trains on).
CREATE TABLE dataset_versions (
    dataset         TEXT PRIMARY KEY,
    version         INTEGER NOT NULL,
    content_digest  TEXT NOT NULL,
    uri             TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A debounce/coalescing window per model: opened by the first signal, fired by the ticker once due_at passed.
-- Being a row (not a timer), it survives restarts; at most one open window per model.
CREATE TABLE triggers (
    id          BIGSERIAL PRIMARY KEY,
    model       TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('dataset', 'retrain', 'schedule', 'manual')),
    state       TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'fired', 'deduplicated', 'skipped')),
    opened_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    due_at      TIMESTAMPTZ NOT NULL,
    event_ids   TEXT[] NOT NULL DEFAULT '{}',
    signals     INTEGER NOT NULL DEFAULT 1,
    cause       JSONB,
    job_id      TEXT,
    note        TEXT NOT NULL DEFAULT '',
    closed_at   TIMESTAMPTZ
);
CREATE UNIQUE INDEX triggers_one_open_per_model ON triggers (model) WHERE state = 'open';
CREATE INDEX triggers_due ON triggers (due_at) WHERE state = 'open';

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    model             TEXT NOT NULL,
    idempotency_key   TEXT NOT NULL UNIQUE,
    state             TEXT NOT NULL
                      CHECK (state IN ('pending', 'scheduled', 'running', 'succeeded', 'failed', 'cancelled')),
    attempt           INTEGER NOT NULL DEFAULT 1,  -- the current (or next) attempt; +1 on every re-queue
    max_attempts      INTEGER NOT NULL,
    priority          INTEGER NOT NULL DEFAULT 0,
    trigger           TEXT NOT NULL,
    trigger_event_ids TEXT[] NOT NULL DEFAULT '{}',
    datasets          JSONB NOT NULL,
    entrypoint        TEXT NOT NULL,
    params            JSONB NOT NULL,
    code_version      TEXT NOT NULL,
    timeout_s         DOUBLE PRECISION NOT NULL,
    memory_limit_mb   INTEGER,
    backoff_base_s    DOUBLE PRECISION NOT NULL,
    backoff_max_s     DOUBLE PRECISION NOT NULL,
    cause             JSONB,
    next_attempt_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    state_since       TIMESTAMPTZ NOT NULL DEFAULT now(),
    deadline_at       TIMESTAMPTZ,
    run_id            TEXT,
    last_reason       TEXT NOT NULL DEFAULT '',
    result            JSONB,
    created_by        TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at       TIMESTAMPTZ
);
CREATE INDEX jobs_ready ON jobs (priority DESC, id) WHERE state = 'pending';
CREATE INDEX jobs_active ON jobs (model) WHERE state IN ('scheduled', 'running');
CREATE INDEX jobs_deadline ON jobs (deadline_at) WHERE state IN ('scheduled', 'running');
CREATE INDEX jobs_by_model ON jobs (model, id);

CREATE TABLE job_transitions (
    id          BIGSERIAL PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    event_id    TEXT NOT NULL,
    actor       TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX job_transitions_by_job ON job_transitions (job_id, id);

-- Transitions refused by the state machine (out of order, stale attempt, job already terminal): kept, not dropped.
CREATE TABLE rejected_transitions (
    id              BIGSERIAL PRIMARY KEY,
    job_id          TEXT NOT NULL,
    current_state   TEXT NOT NULL,
    requested_state TEXT NOT NULL,
    attempt         INTEGER,
    event_id        TEXT,
    event_type      TEXT,
    detail          TEXT NOT NULL,
    at              TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX rejected_transitions_by_job ON rejected_transitions (job_id, id);
