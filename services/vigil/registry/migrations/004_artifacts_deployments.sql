-- Artifacts uploaded through the API (the bytes live in the content-addressed store; this is their catalogue),
-- and what the registry learned about deployments from deployment.* events (the downstream end of lineage).

CREATE TABLE artifacts (
    digest       TEXT PRIMARY KEY,
    format       TEXT NOT NULL CHECK (format IN ('json', 'npz')),
    size_bytes   BIGINT NOT NULL,
    filename     TEXT,
    uploaded_by  TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per (deployment, model, version) the deployer ever served or tried; status is the latest thing we heard.
CREATE TABLE deployment_versions (
    deployment      TEXT NOT NULL,
    model           TEXT NOT NULL,
    version         INTEGER NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('stable', 'candidate')),
    status          TEXT NOT NULL,
    first_event_id  TEXT NOT NULL,
    last_event_id   TEXT NOT NULL,
    first_seen_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment, model, version)
);
CREATE INDEX deployment_versions_model ON deployment_versions (model, version);
