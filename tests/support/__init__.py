"""Helpers for tests that run Vigil services in-process against the session's real broker and Postgres."""
