-- The deployer's state: versions it may serve, endpoints, rollouts and their history.

-- Versions announced by model.version.registered (all models: a deployment may be created after its versions).
CREATE TABLE model_versions (
    model             text        NOT NULL,
    version           integer     NOT NULL CHECK (version >= 1),
    artifact_digest   text        NOT NULL,
    artifact_format   text        NOT NULL,
    gates_passed      boolean     NOT NULL,
    status            text        NOT NULL DEFAULT 'registered' CHECK (status IN ('registered', 'failed')),
    registered_event  jsonb       NOT NULL,  -- envelope of model.version.registered (cause of the rollout it starts)
    registered_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version)
);

-- One row per endpoint: what serves now. Derived from the active rollout after every move, read by the gateway.
CREATE TABLE deployments (
    name               text        PRIMARY KEY,
    model              text        NOT NULL,
    strategy           text        NOT NULL CHECK (strategy IN ('canary', 'blue_green', 'shadow')),
    steps              jsonb       NOT NULL,
    auto_deploy        text        NOT NULL CHECK (auto_deploy IN ('auto', 'manual')),
    min_samples        integer     NOT NULL CHECK (min_samples >= 1),
    stable_version     integer,
    candidate_version  integer,
    candidate_weight   integer     NOT NULL DEFAULT 0 CHECK (candidate_weight BETWEEN 0 AND 100),
    mirror             boolean     NOT NULL DEFAULT false,
    previous_version   integer,    -- the stable before the last promotion: kept warm for instant rollback
    pending_version    integer,    -- a registered version waiting for a rollout (manual policy, or one in flight)
    rollout_id         text,       -- the active rollout, if any
    last_rollout_id    text,
    created_by         text        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (candidate_version IS NOT NULL OR (candidate_weight = 0 AND NOT mirror))
);
CREATE INDEX deployments_model ON deployments (model);

CREATE TABLE rollouts (
    id                 text        PRIMARY KEY,
    deployment         text        NOT NULL REFERENCES deployments (name),
    model              text        NOT NULL,
    strategy           text        NOT NULL,
    stable_version     integer     NOT NULL,
    candidate_version  integer     NOT NULL,
    steps              jsonb       NOT NULL,
    min_samples        integer     NOT NULL,
    trigger            text        NOT NULL CHECK (trigger IN ('auto', 'api')),
    phase              text        NOT NULL
        CHECK (phase IN ('progressing', 'paused', 'promoted', 'aborted', 'rolled_back')),
    step_index         integer     NOT NULL DEFAULT 0,
    weight             integer     NOT NULL DEFAULT 0,
    pause_reason       text,
    awaiting_verdict   boolean     NOT NULL DEFAULT false,
    wake_at            timestamptz,  -- durable timer: the ticker fires it from here, across restarts
    approved_by        text,
    verdict_event_id   text,
    last_event         jsonb,        -- envelope of the rollout's latest event: the cause of the next one
    started_by         text        NOT NULL,
    started_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz
);
CREATE INDEX rollouts_deployment ON rollouts (deployment, started_at DESC);
CREATE INDEX rollouts_due ON rollouts (wake_at) WHERE phase = 'progressing' AND wake_at IS NOT NULL;
-- At most one active rollout per deployment.
CREATE UNIQUE INDEX rollouts_one_active ON rollouts (deployment) WHERE phase IN ('progressing', 'paused');

-- Every move tried on a rollout: accepted ones with the events they emitted, rejected ones with the reason.
CREATE TABLE rollout_history (
    id           bigserial   PRIMARY KEY,
    rollout_id   text        NOT NULL REFERENCES rollouts (id),
    action       text        NOT NULL,
    accepted     boolean     NOT NULL,
    from_phase   text        NOT NULL,
    to_phase     text        NOT NULL,
    step_index   integer     NOT NULL,
    actor        text        NOT NULL,
    detail       text        NOT NULL DEFAULT '',
    cause_event_id text,
    event_ids    text[]      NOT NULL DEFAULT '{}',
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rollout_history_rollout ON rollout_history (rollout_id, id);
