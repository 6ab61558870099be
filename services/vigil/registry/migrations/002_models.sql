-- Models, their immutable versions, every candidate the gates decided on, and the gate policies.

CREATE TABLE models (
    name            TEXT PRIMARY KEY,
    description     TEXT NOT NULL DEFAULT '',
    tags            JSONB NOT NULL DEFAULT '{}'::jsonb,
    latest_version  INTEGER NOT NULL DEFAULT 0,
    created_by      TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Gate policies are versioned: each change is a new row, so a decision names the exact policy it applied.
CREATE TABLE gate_policies (
    model       TEXT NOT NULL REFERENCES models(name),
    version     INTEGER NOT NULL CHECK (version >= 1),
    gates       JSONB NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version)
);

CREATE TABLE model_versions (
    model                    TEXT NOT NULL REFERENCES models(name),
    version                  INTEGER NOT NULL CHECK (version >= 1),
    source                   TEXT NOT NULL CHECK (source IN ('training', 'manual')),
    job_id                   TEXT,
    run_id                   TEXT,
    params                   JSONB NOT NULL DEFAULT '{}'::jsonb,
    metrics                  JSONB NOT NULL DEFAULT '{}'::jsonb,
    artifact_digest          TEXT NOT NULL,
    artifact_uri             TEXT NOT NULL,
    artifact_format          TEXT NOT NULL,
    artifact_size_bytes      BIGINT,
    reference_profile        JSONB,
    reference_profile_uri    TEXT,
    reference_profile_digest TEXT,
    signature                JSONB NOT NULL DEFAULT '[]'::jsonb,
    datasets                 JSONB NOT NULL DEFAULT '[]'::jsonb,
    code_version             TEXT,
    environment              JSONB,
    tags                     JSONB NOT NULL DEFAULT '{}'::jsonb,
    description              TEXT NOT NULL DEFAULT '',
    gates                    JSONB NOT NULL DEFAULT '[]'::jsonb,
    gate_policy_version      INTEGER,
    source_event_id          TEXT,
    registered_event_id      TEXT NOT NULL UNIQUE,
    created_by               TEXT NOT NULL,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version)
);
CREATE UNIQUE INDEX model_versions_run ON model_versions (model, run_id) WHERE run_id IS NOT NULL;
CREATE INDEX model_versions_artifact ON model_versions (artifact_digest);
CREATE INDEX model_versions_datasets ON model_versions USING gin (datasets jsonb_path_ops);

-- Versions are immutable once registered: the database refuses to change or remove them.
CREATE FUNCTION model_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'model versions are immutable (% on %.v%)', TG_OP, OLD.model, OLD.version;
END;
$$;
CREATE TRIGGER model_versions_no_update BEFORE UPDATE OR DELETE ON model_versions
    FOR EACH ROW EXECUTE FUNCTION model_versions_immutable();

-- One row per candidate the gates decided on: a training run (idempotency key: model + run id) or a manual
-- registration request. Rejected candidates live only here, with the evidence; registered ones point at their
-- version. The training rows are the "run" nodes of the lineage graph.
CREATE TABLE candidates (
    model               TEXT NOT NULL REFERENCES models(name),
    run_id              TEXT NOT NULL,
    source              TEXT NOT NULL CHECK (source IN ('training', 'manual')),
    job_id              TEXT,
    attempt             INTEGER,
    outcome             TEXT NOT NULL CHECK (outcome IN ('registered', 'rejected')),
    version             INTEGER,
    metrics             JSONB NOT NULL DEFAULT '{}'::jsonb,
    artifact_digest     TEXT NOT NULL,
    datasets            JSONB NOT NULL DEFAULT '[]'::jsonb,
    code_version        TEXT,
    gates               JSONB NOT NULL DEFAULT '[]'::jsonb,
    gate_policy_version INTEGER NOT NULL,
    reason              TEXT NOT NULL DEFAULT '',
    source_event_id     TEXT,
    decision_event_id   TEXT NOT NULL UNIQUE,
    decided_by          TEXT NOT NULL,
    decided_at          TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (model, run_id),
    CHECK ((outcome = 'registered') = (version IS NOT NULL))
);
CREATE INDEX candidates_datasets ON candidates USING gin (datasets jsonb_path_ops);
CREATE INDEX candidates_decided ON candidates (model, decided_at);
