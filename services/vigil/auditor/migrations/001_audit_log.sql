-- The audit log: one row per control-plane event, chained by hashes.
--   entry_hash = sha256(prev_hash || '\n' || canonical JSON of the entry's fields), genesis prev_hash = 64 zeros.
-- The exact canonical bytes of the event are kept, so its sha256 can be recomputed by `verify`.
CREATE TABLE audit_log (
    seq            BIGINT PRIMARY KEY,
    event_id       TEXT NOT NULL UNIQUE,
    event_type     TEXT NOT NULL,
    subject        TEXT NOT NULL,
    actor          TEXT NOT NULL,
    event_time     TIMESTAMPTZ NOT NULL,
    correlation_id TEXT NOT NULL,
    causation_id   TEXT,
    topic          TEXT NOT NULL,
    event_sha256   TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    entry_hash     TEXT NOT NULL,
    event          BYTEA NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_subject ON audit_log (subject text_pattern_ops, seq);
CREATE INDEX audit_log_correlation ON audit_log (correlation_id, seq);
CREATE INDEX audit_log_type_time ON audit_log (event_type, event_time);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);

-- Append-only: UPDATE, DELETE and TRUNCATE are refused for everyone, owner included.
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
