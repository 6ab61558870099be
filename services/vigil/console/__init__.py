"""The Vigil console: a web UI over the six services' public HTTP APIs (it owns no data)."""
