-- Bus tables, created in every service's own schema (search_path is set to it).

-- Transactional outbox: a service writes its state change and the records it emits in one transaction;
-- the relay publishes them. Rows are kept for a retention period after publishing so that they can be
-- republished when the (memory-only) broker loses its log.
CREATE TABLE IF NOT EXISTS outbox (
    seq           BIGSERIAL PRIMARY KEY,
    event_id      TEXT NOT NULL UNIQUE,
    topic         TEXT NOT NULL,
    key           TEXT,
    value         BYTEA NOT NULL,
    headers       JSONB NOT NULL DEFAULT '[]'::jsonb,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at  TIMESTAMPTZ,
    publish_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_published_at ON outbox (published_at);

-- Inbox: ids of events whose effects are committed; written in the same transaction as the effect,
-- so a redelivered event is recognised and skipped.
CREATE TABLE IF NOT EXISTS inbox (
    event_id      TEXT PRIMARY KEY,
    event_type    TEXT NOT NULL,
    topic         TEXT NOT NULL,
    partition     INTEGER NOT NULL,
    "offset"      BIGINT NOT NULL,
    processed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Dead letters this consumer gave up on, with the reason; deduplicated so a redelivered poison record is
-- dead-lettered once. status: dead → replayed (→ dead again if it fails again).
CREATE TABLE IF NOT EXISTS dead_letters (
    id            BIGSERIAL PRIMARY KEY,
    dedupe_key    TEXT NOT NULL UNIQUE,
    event_id      TEXT,
    event_type    TEXT,
    topic         TEXT NOT NULL,
    partition     INTEGER NOT NULL,
    "offset"      BIGINT NOT NULL,
    key           TEXT,
    value         BYTEA,
    headers       JSONB NOT NULL DEFAULT '[]'::jsonb,
    reason        TEXT NOT NULL,
    error         TEXT NOT NULL,
    attempts      INTEGER NOT NULL,
    status        TEXT NOT NULL DEFAULT 'dead' CHECK (status IN ('dead', 'replayed')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
