-- Where a run executes (issue #24): 'local' or 'ray'. Recorded from training.requested's executor when the
-- scheduler sent one; otherwise the worker writes what it resolved when it claims the run (the deprecated params key
-- "vigil.executor", then trainer_executor). NULL: queued without one, or refused before it had a valid one.
ALTER TABLE runs ADD COLUMN executor TEXT CHECK (executor IN ('local', 'ray'));
