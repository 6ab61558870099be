-- Datasets and their versions. A version is identified by its content digest: the same bytes announced twice
-- are the same version (idempotent registration).
CREATE TABLE datasets (
    name        TEXT PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    latest_version INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE dataset_versions (
    dataset         TEXT NOT NULL REFERENCES datasets(name),
    version         INTEGER NOT NULL,
    content_digest  TEXT NOT NULL,
    uri             TEXT NOT NULL,
    columns         JSONB NOT NULL DEFAULT '[]'::jsonb,
    row_count       BIGINT NOT NULL,
    producer        TEXT NOT NULL,
    parent_version  INTEGER,
    source_event_id TEXT NOT NULL,
    registered_event_id TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, version),
    UNIQUE (dataset, content_digest)
);
