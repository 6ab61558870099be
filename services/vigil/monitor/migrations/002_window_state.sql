-- The monitor's live state, beside the inbox (issue #19): every batch of stream events changes these rows in the
-- same transaction as its inbox rows, so each event's effect is applied exactly once by construction.

-- One row per open (or still revisable) window of deployment × version × variant: mergeable kernel states.
CREATE TABLE window_state (
    key           TEXT PRIMARY KEY,        -- deployment|version|variant|start_ms (state.window_key)
    deployment    TEXT NOT NULL,
    model         TEXT NOT NULL,
    version       INT NOT NULL,
    variant       TEXT NOT NULL,
    start_ms      BIGINT NOT NULL,
    end_ms        BIGINT NOT NULL,
    state         BYTEA NOT NULL,          -- WindowState.to_bytes()
    labels        BIGINT NOT NULL,         -- labels folded so far (the state's count, readable without decoding)
    closed_labels BIGINT,                  -- labels behind the stored figures; NULL until the window first closed
    seq           BIGINT NOT NULL DEFAULT 1, -- bumped on every write: a cached copy is current iff its seq matches
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX window_state_end ON window_state (end_ms);
CREATE INDEX window_state_series ON window_state (deployment, variant, start_ms);

-- The label join: one row per prediction batch with the compact columns a later label needs (joins.py).
CREATE TABLE join_batches (
    id         BIGSERIAL PRIMARY KEY,
    deployment TEXT NOT NULL,
    window_key TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    cols       BYTEA NOT NULL,
    UNIQUE (window_key, event_id)
);
CREATE INDEX join_batches_deployment ON join_batches (deployment, id);

-- Which predictions of a window took a label already (a prediction has one ground truth: the first label wins).
CREATE TABLE labelled (
    window_key TEXT NOT NULL,
    hash       BIGINT NOT NULL,            -- ingest.id_hashes of the prediction id, as a signed 64-bit value
    PRIMARY KEY (window_key, hash)
);

-- Labels whose predictions had not arrived yet, one row per label record (held.py).
CREATE TABLE held_labels (
    id         BIGSERIAL PRIMARY KEY,
    deployment TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    at_ms      BIGINT NOT NULL,
    rows       INT NOT NULL,               -- labels in the record (the gauge's sum without decoding)
    entry      BYTEA NOT NULL,             -- HeldLabels.to_bytes()
    UNIQUE (deployment, event_id)
);

-- How far each stream partition has been consumed, in event time: windows close behind the slowest (closer.py).
CREATE TABLE stream_watermarks (
    topic        TEXT NOT NULL,
    partition    INT NOT NULL,
    watermark_ms BIGINT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
