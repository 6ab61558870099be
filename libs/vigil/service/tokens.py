"""API tokens and roles, stored hashed in a JSON file that every service reads.

Only sha256 digests of tokens are stored, so the file can be read by every service without exposing a usable
secret. ``vigil up`` issues an admin token at first start (plaintext written once to ``<home>/admin.token``, mode
0600) and one token per service principal; ``vigil tokens create|list|revoke`` manage the others. A record may carry
an expiry (checked on every request) and when it was created. Writers go through :func:`update_tokens`: an exclusive
lock beside the file for the read-modify-write, then a new file renamed into place (0600), so a reader sees the old
file or the new one, never half of one, and two writers never lose each other's change.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Role(StrEnum):
    """Roles, least to most privileged. ``admin`` implies every other role."""

    VIEWER = "viewer"
    #: Serving clients: may call predict / infer and nothing else. Predictions are the traffic a canary is judged on,
    #: so sending them is not a reader's right (issue #20 item 5).
    PREDICTOR = "predictor"
    SCIENTIST = "scientist"
    DEPLOYER = "deployer"
    #: Risk officers: read everything a viewer reads, and set gate and monitor policies (with deployers), which the
    #: scientists whose models they judge may not.
    RISK = "risk"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True)
class TokenRecord:
    """A stored token: digest, who it is, what it may do."""

    sha256: str
    principal: str
    roles: frozenset[Role] = field(default_factory=frozenset)
    created_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None

    def expired(self, now: dt.datetime | None = None) -> bool:
        """True once ``expires_at`` has passed (never for a token without expiry)."""
        return self.expires_at is not None and (now or dt.datetime.now(dt.UTC)) >= self.expires_at

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "sha256": self.sha256,
            "principal": self.principal,
            "roles": sorted(r.value for r in self.roles),
        }
        if self.created_at is not None:
            out["created_at"] = self.created_at.isoformat(timespec="seconds")
        if self.expires_at is not None:
            out["expires_at"] = self.expires_at.isoformat(timespec="seconds")
        return out


#: Published on purpose (docs/deploy.md) so a local compose stack works at once; refused in production.
DEV_ONLY_TOKENS = frozenset({"vgl_dev_only_admin_NOT_A_SECRET"})


def token_digest(token: str) -> str:
    """sha256 hex of a plaintext token."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(
    principal: str,
    roles: set[Role] | frozenset[Role],
    *,
    expires_at: dt.datetime | None = None,
    created_at: dt.datetime | None = None,
) -> tuple[str, TokenRecord]:
    """Create a new random token; return (plaintext, record to store)."""
    plaintext = "vgl_" + secrets.token_urlsafe(32)
    return plaintext, TokenRecord(token_digest(plaintext), principal, frozenset(roles), created_at, expires_at)


def _when(value: object) -> dt.datetime | None:
    """An ISO-8601 time from the file (naive ones are UTC), or None."""
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def load_tokens(path: Path) -> dict[str, TokenRecord]:
    """Read the token file into digest → record. A missing file means no tokens (deny everything)."""
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    records: dict[str, TokenRecord] = {}
    for item in raw.get("tokens", []):
        rec = TokenRecord(
            str(item["sha256"]),
            str(item["principal"]),
            frozenset(Role(r) for r in item["roles"]),
            _when(item.get("created_at")),
            _when(item.get("expires_at")),
        )
        records[rec.sha256] = rec
    return records


def save_tokens(path: Path, records: list[TokenRecord]) -> None:
    """Write the token file atomically: a new file (0600 from its creation) in the same directory, renamed over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"tokens": [r.to_json() for r in records]}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on ``<file>.lock`` beside the token file, for one read-modify-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_tokens(path: Path, change: Callable[[list[TokenRecord]], list[TokenRecord]]) -> list[TokenRecord]:
    """Read the token file, apply ``change`` to its records and write the result, under the file's lock."""
    with _locked(path):
        records = change(list(load_tokens(path).values()))
        save_tokens(path, records)
        return records
