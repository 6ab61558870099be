-- The verified producer of each entry's event (docs/security.md): the principal whose key signed it, as opposed to
-- the self-asserted `actor`. Covered by entry_hash when set; NULL for entries chained before events were signed.
ALTER TABLE audit_log ADD COLUMN signer TEXT;
CREATE INDEX audit_log_signer ON audit_log (signer, seq);
