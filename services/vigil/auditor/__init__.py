"""Auditor: every event into an append-only, hash-chained, queryable audit log."""
