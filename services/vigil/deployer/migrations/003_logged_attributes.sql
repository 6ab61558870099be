-- The request fields the gateway logs beside each prediction as attributes (categorical columns of
-- prediction.logged), declared when the deployment is created; empty: none (docs/deployer.md, logged attributes).
ALTER TABLE deployments ADD COLUMN logged_attributes text[] NOT NULL DEFAULT '{}'
    CHECK (cardinality(logged_attributes) <= 16);
