-- A probe service's only table: one row per applied effect, so tests can count effects exactly.
CREATE TABLE effects (
    event_id   TEXT NOT NULL,
    dataset    TEXT NOT NULL,
    producer   TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
