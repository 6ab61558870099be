-- Where a policy's runs execute (issue #24): 'local' or 'ray', NULL = the trainer's default (trainer_executor).
-- The job keeps the policy's value from its creation, like its entrypoint and limits, and sends it in every
-- attempt's training.requested. Existing policies and jobs keep NULL: their trainers decide, as before.
ALTER TABLE policies ADD COLUMN executor TEXT CHECK (executor IN ('local', 'ray'));
ALTER TABLE jobs ADD COLUMN executor TEXT CHECK (executor IN ('local', 'ray'));
