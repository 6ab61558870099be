-- The human sections of a model version's card and their sign-offs (evidence packs, issue #23). Both append-only:
-- the current text of a section is its newest edit; a sign-off names the digest of the card it approved.

CREATE TABLE model_card_edits (
    id          BIGSERIAL PRIMARY KEY,
    model       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    field       TEXT NOT NULL CHECK (field IN ('intended_use', 'out_of_scope_uses', 'risks', 'ethical_considerations')),
    text        TEXT NOT NULL,
    revision    INTEGER NOT NULL CHECK (revision >= 1),
    edited_by   TEXT NOT NULL,
    edited_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    event_id    TEXT NOT NULL UNIQUE,
    FOREIGN KEY (model, version) REFERENCES model_versions(model, version),
    UNIQUE (model, version, field, revision)
);

CREATE TABLE model_card_signoffs (
    id             BIGSERIAL PRIMARY KEY,
    model          TEXT NOT NULL,
    version        INTEGER NOT NULL,
    signed_off_by  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('deployer', 'admin')),
    card_sha256    TEXT NOT NULL,
    statement      TEXT NOT NULL DEFAULT '',
    signed_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    event_id       TEXT NOT NULL UNIQUE,
    FOREIGN KEY (model, version) REFERENCES model_versions(model, version)
);

CREATE FUNCTION model_cards_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'model card history is append-only';
END;
$$;
CREATE TRIGGER model_card_edits_no_update BEFORE UPDATE OR DELETE ON model_card_edits
    FOR EACH ROW EXECUTE FUNCTION model_cards_append_only();
CREATE TRIGGER model_card_signoffs_no_update BEFORE UPDATE OR DELETE ON model_card_signoffs
    FOR EACH ROW EXECUTE FUNCTION model_cards_append_only();
