-- Aliases (champion, challenger, any name) and their full history.

CREATE TABLE aliases (
    model       TEXT NOT NULL REFERENCES models(name),
    alias       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    updated_by  TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    event_id    TEXT NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES model_versions(model, version)
);

-- Append-only: one row per change. "What did champion point to at T" = the last row with changed_at <= T.
-- cause_event_id is the event that caused the move (deployment.promoted / deployment.rolled_back), null for API.
CREATE TABLE alias_history (
    id              BIGSERIAL PRIMARY KEY,
    model           TEXT NOT NULL REFERENCES models(name),
    alias           TEXT NOT NULL,
    from_version    INTEGER,
    to_version      INTEGER,
    cause           TEXT NOT NULL CHECK (cause IN ('api', 'promotion', 'rollback')),
    actor           TEXT NOT NULL,
    deployment      TEXT,
    reason          TEXT NOT NULL DEFAULT '',
    event_id        TEXT NOT NULL UNIQUE,
    cause_event_id  TEXT,
    changed_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX alias_history_at ON alias_history (model, alias, changed_at, id);

CREATE FUNCTION alias_history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'alias history is append-only';
END;
$$;
CREATE TRIGGER alias_history_no_update BEFORE UPDATE OR DELETE ON alias_history
    FOR EACH ROW EXECUTE FUNCTION alias_history_append_only();
