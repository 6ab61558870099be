"""API tokens and roles, stored hashed in a JSON file that every service reads.

Only sha256 digests of tokens are stored, so the file can be read by every service without exposing a usable
secret. ``vigil up`` issues an admin token at first start (plaintext written once to ``<home>/admin.token``, mode
0600) and one token per service principal.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Role(StrEnum):
    """Roles, least to most privileged. ``admin`` implies every other role."""

    VIEWER = "viewer"
    SCIENTIST = "scientist"
    DEPLOYER = "deployer"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True)
class TokenRecord:
    """A stored token: digest, who it is, what it may do."""

    sha256: str
    principal: str
    roles: frozenset[Role] = field(default_factory=frozenset)

    def to_json(self) -> dict[str, object]:
        return {"sha256": self.sha256, "principal": self.principal, "roles": sorted(r.value for r in self.roles)}


#: Published on purpose (docs/deploy.md) so a local compose stack works at once; refused in production.
DEV_ONLY_TOKENS = frozenset({"vgl_dev_only_admin_NOT_A_SECRET"})


def token_digest(token: str) -> str:
    """sha256 hex of a plaintext token."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(principal: str, roles: set[Role] | frozenset[Role]) -> tuple[str, TokenRecord]:
    """Create a new random token; return (plaintext, record to store)."""
    plaintext = "vgl_" + secrets.token_urlsafe(32)
    return plaintext, TokenRecord(token_digest(plaintext), principal, frozenset(roles))


def load_tokens(path: Path) -> dict[str, TokenRecord]:
    """Read the token file into digest → record. A missing file means no tokens (deny everything)."""
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    records: dict[str, TokenRecord] = {}
    for item in raw.get("tokens", []):
        rec = TokenRecord(str(item["sha256"]), str(item["principal"]), frozenset(Role(r) for r in item["roles"]))
        records[rec.sha256] = rec
    return records


def save_tokens(path: Path, records: list[TokenRecord]) -> None:
    """Write the token file atomically (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"tokens": [r.to_json() for r in records]}, indent=2))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
