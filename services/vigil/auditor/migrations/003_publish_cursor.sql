-- The audit log is the outbox of its own `audit.entry` events: a publisher reads entries with seq > last_seq in
-- order, sends them to vigil.audit, waits for the broker's acks, then advances last_seq. One row (one chain per
-- deployment of the auditor); it moves back only when the broker lost its log (the publisher rewinds it over the
-- outbox retention window so the entries are republished, with the same event ids).
CREATE TABLE audit_publish_cursor (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    last_seq   BIGINT NOT NULL CHECK (last_seq >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    rewound_at TIMESTAMPTZ
);

-- Entries chained before this migration had their audit.entry written to the outbox, which still relays them:
-- start after them, so nothing is published twice under two different ids.
INSERT INTO audit_publish_cursor (last_seq) SELECT coalesce(max(seq), 0) FROM audit_log;
