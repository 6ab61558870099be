-- Checkpoints, Merkle blocks, retention classes, expiry records; grants.
--
-- Tamper evidence beyond the hash chain: every `audit_checkpoint_every_entries` entries (or interval) the auditor
-- signs (Ed25519) the RFC 6962 Merkle root over entries 1..to_seq. Leaf i is entry seq = i + 1, its data the raw
-- 32 bytes of entry_hash. See docs/audit.md.

-- Retention class per entry and the date from which it may be expired (at a checkpoint boundary only).
-- Not covered by entry_hash: expiry is an administrative fact, and the hash chain of old entries must not change.
ALTER TABLE audit_log
    ADD COLUMN retention_class TEXT NOT NULL DEFAULT 'control_plane',
    ADD COLUMN expires_at      TIMESTAMPTZ;

-- One row per signed checkpoint. The tree covers entries from_seq (always 1) .. to_seq.
-- frontier = the perfect subtrees on the tree's right edge ([[level, hex], …]): enough to compute this root and
-- to extend it to later ones without the older leaves, so verification survives expiry of old entries.
CREATE TABLE audit_checkpoints (
    to_seq          BIGINT PRIMARY KEY,
    from_seq        BIGINT NOT NULL CHECK (from_seq = 1),
    chain           TEXT NOT NULL,
    merkle_root     TEXT NOT NULL,
    last_entry_hash TEXT NOT NULL,
    algorithm       TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    signature       TEXT NOT NULL,
    frontier        JSONB NOT NULL,
    event_id        TEXT NOT NULL UNIQUE,
    event           BYTEA NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Roots of complete 256-leaf blocks (level 8 of the tree): what inclusion and consistency proofs on a large log
-- are built from (a proof reads a few thousand of these, not millions of leaves). Derived data; never changes.
CREATE TABLE audit_merkle_blocks (
    block BIGINT PRIMARY KEY,
    hash  BYTEA NOT NULL
);

-- Expiry: entries 1..through_seq were removed under retention. through_seq must equal a checkpoint's to_seq; that
-- checkpoint's frontier and last_entry_hash are where verification starts afterwards.
CREATE TABLE audit_expirations (
    through_seq BIGINT PRIMARY KEY REFERENCES audit_checkpoints (to_seq),
    expired_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL
);


CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_merkle_blocks_no_update BEFORE UPDATE OR DELETE ON audit_merkle_blocks
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_merkle_blocks_no_truncate BEFORE TRUNCATE ON audit_merkle_blocks
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_expirations_no_update BEFORE UPDATE OR DELETE ON audit_expirations
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_expirations_no_truncate BEFORE TRUNCATE ON audit_expirations
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- Grants: nobody but the owner may change these tables (the triggers stop the owner too). Production runs the
-- auditor as a role that does NOT own them and holds only SELECT, INSERT (see docs/audit.md, "Roles"): then even
-- disabling the triggers needs the owner or a superuser.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log, audit_checkpoints, audit_merkle_blocks, audit_expirations FROM PUBLIC;
