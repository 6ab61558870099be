"""The state directory of an embedded stack (``.vigil/`` or ``VIGIL_HOME``) and the ``stack.json`` it publishes.

Layout::

    <home>/
      stack.json          what is running now: pids, ports, URLs (removed on clean shutdown)
      stack.lock          held (flock) by the running supervisor, so two `vigil up` cannot share a home
      admin.token         plaintext admin token, written once, mode 0600, reused on every restart
      tokens.json         sha256 digests of all tokens, read by every service
      keys/artifacts.json the artifact encryption keyring (0600), created once: encryption at rest is on by default
      keys/postgres-roles.json  passwords of the services' Postgres roles (0600), created once
      keys/postgres-superuser   the embedded Postgres superuser's password (0600), created once
      postgres/           embedded Postgres data directory (kept across restarts)
      logs/               broker.log, broker.pid, postgres.log, <service>.log
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

STATE_VERSION = 1


def default_home() -> Path:
    """``VIGIL_HOME`` if set, else ``./.vigil``."""
    return Path(os.environ.get("VIGIL_HOME") or ".vigil").absolute()


@dataclass(frozen=True)
class StackPaths:
    """Where everything of one stack lives under its home directory."""

    home: Path

    @classmethod
    def at(cls, home: Path | str | None = None) -> StackPaths:
        return cls(Path(home).absolute() if home is not None else default_home())

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    @property
    def lock_file(self) -> Path:
        return self.home / "stack.lock"

    @property
    def admin_token(self) -> Path:
        return self.home / "admin.token"

    @property
    def tokens_file(self) -> Path:
        return self.home / "tokens.json"

    @property
    def artifact_keyring(self) -> Path:
        """Where services look for the artifact keyring by default (``ServiceSettings.artifact_keyring_file``)."""
        return self.home / "keys" / "artifacts.json"

    @property
    def postgres_roles(self) -> Path:
        """Passwords of the services' Postgres roles (0600, in the 0700 ``keys/``; ``vigil.stack.roles``)."""
        return self.home / "keys" / "postgres-roles.json"

    @property
    def postgres_superuser(self) -> Path:
        """The embedded Postgres superuser's password (0600; ``vigil.stack.postgres``): only ``vigil up`` uses it."""
        return self.home / "keys" / "postgres-superuser"

    @property
    def postgres_data(self) -> Path:
        return self.home / "postgres"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def postgres_log(self) -> Path:
        return self.logs / "postgres.log"

    @property
    def broker_log(self) -> Path:
        return self.logs / "broker.log"

    @property
    def broker_pid(self) -> Path:
        return self.logs / "broker.pid"

    def service_log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (for state files and output)."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def write_state(paths: StackPaths, state: dict[str, Any]) -> None:
    """Write ``stack.json`` atomically."""
    paths.home.mkdir(parents=True, exist_ok=True)
    tmp = paths.state_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"version": STATE_VERSION, **state}, indent=2) + "\n")
    os.replace(tmp, paths.state_file)


def read_state(paths: StackPaths) -> dict[str, Any] | None:
    """The published state, or None when no stack is (cleanly) recorded as running."""
    try:
        data = json.loads(paths.state_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
