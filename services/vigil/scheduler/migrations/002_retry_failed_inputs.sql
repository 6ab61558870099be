-- A failed or cancelled job must not block every later attempt on the same inputs (a retrain.requested from the
-- monitor after an outage, the next cron tick): the idempotency key is unique only among live and succeeded jobs.
ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key_key;
CREATE UNIQUE INDEX jobs_idempotency_key_live ON jobs (idempotency_key) WHERE state NOT IN ('failed', 'cancelled');
CREATE INDEX jobs_idempotency_key ON jobs (idempotency_key);
