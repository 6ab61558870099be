-- A counter bumped by every write of what a deployment serves (under its row lock, so it only grows): the gateway's
-- in-memory serving state keeps the entry with the highest one, so a reload that read an older snapshot never
-- undoes a newer change it already applied from a NOTIFY.
ALTER TABLE deployments ADD COLUMN serving_seq BIGINT NOT NULL DEFAULT 0;
