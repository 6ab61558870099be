-- Monitor schema: reference profiles of the versions being served, policies (versioned), window figures,
-- and the decisions taken from them (one row per decision, unique per dedupe key: closing is idempotent).

CREATE TABLE reference_profiles (
    model          TEXT NOT NULL,
    version        INT NOT NULL,
    profile        JSONB,                 -- DatasetProfile.to_dict(); NULL when only a URI was given
    profile_uri    TEXT,
    profile_digest TEXT,
    event_id       TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version)
);

CREATE TABLE policies (
    deployment TEXT NOT NULL,
    version    INT NOT NULL,
    body       JSONB NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment, version)
);

CREATE TABLE windows (
    id           BIGSERIAL UNIQUE,
    deployment   TEXT NOT NULL,
    model        TEXT NOT NULL,
    version      INT NOT NULL,
    variant      TEXT NOT NULL,
    kind         TEXT NOT NULL,          -- tumbling | rolling
    window_start TIMESTAMPTZ NOT NULL,
    window_end   TIMESTAMPTZ NOT NULL,
    revision     INT NOT NULL DEFAULT 0,
    predictions  BIGINT NOT NULL,
    labels       BIGINT NOT NULL,
    figures      JSONB NOT NULL,
    event_id     TEXT NOT NULL,          -- the monitor.window event of the latest revision
    closed_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment, version, variant, kind, window_start)
);
CREATE INDEX windows_deployment_start ON windows (deployment, window_start);

CREATE TABLE decisions (
    id             BIGSERIAL PRIMARY KEY,
    dedupe_key     TEXT NOT NULL UNIQUE,
    deployment     TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    window_start   TIMESTAMPTZ NOT NULL,
    policy_version INT NOT NULL,
    payload        JSONB NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX decisions_deployment ON decisions (deployment, id);
