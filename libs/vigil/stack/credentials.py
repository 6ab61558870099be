"""Tokens for an embedded stack: one admin token kept for the life of the home directory, fresh service tokens.

The admin token's plaintext is written once to ``<home>/admin.token`` (mode 0600, appearing whole or not at all:
``vigil.service.secret_file``) and reused on every restart, so scripts and users can rely on it. Service principals
get a new token at every start, handed to the child process in ``VIGIL_SERVICE_TOKEN`` and never written to disk in
plaintext. Tokens in ``tokens.json`` that belong to neither (issued with ``vigil tokens create``, or by hand) are kept
as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vigil.service.secret_file import publish_secret_once
from vigil.service.tokens import Role, TokenRecord, issue_token, token_digest, update_tokens
from vigil.stack.state import StackPaths

ADMIN_PRINCIPAL = "admin"
SERVICE_PRINCIPAL_PREFIX = "service:"
# Service principals act for the platform but do not administer it (no token or gate management).
SERVICE_ROLES = frozenset({Role.VIEWER, Role.SCIENTIST, Role.DEPLOYER, Role.AUDITOR})


@dataclass(frozen=True)
class StackTokens:
    """Plaintext tokens for this run: the admin's and one per service."""

    admin: str
    services: dict[str, str]


def ensure_tokens(paths: StackPaths, service_names: Iterable[str]) -> StackTokens:
    """Make sure the admin token exists and is registered; issue fresh service tokens; rewrite ``tokens.json``."""
    admin = _admin_plaintext(paths)
    service_tokens: dict[str, str] = {}
    service_records: list[TokenRecord] = []
    for name in service_names:
        plaintext, record = issue_token(SERVICE_PRINCIPAL_PREFIX + name, SERVICE_ROLES)
        service_tokens[name] = plaintext
        service_records.append(record)

    def renew(existing: list[TokenRecord]) -> list[TokenRecord]:
        kept = [
            rec
            for rec in existing
            if not rec.principal.startswith(SERVICE_PRINCIPAL_PREFIX) and rec.sha256 != token_digest(admin)
        ]
        return [TokenRecord(token_digest(admin), ADMIN_PRINCIPAL, frozenset({Role.ADMIN})), *kept, *service_records]

    update_tokens(paths.tokens_file, renew)  # under the file's lock: a `vigil tokens create` meanwhile is kept
    return StackTokens(admin=admin, services=service_tokens)


def ensure_admin_token(paths: StackPaths) -> str:
    """The admin token of this home, created on first use and registered in ``tokens.json`` (other tokens kept).
    What ``vigil keys init`` uses to prepare a home for services started without ``vigil up`` (compose, k8s)."""
    admin = _admin_plaintext(paths)
    digest = token_digest(admin)

    def register(existing: list[TokenRecord]) -> list[TokenRecord]:
        kept = [rec for rec in existing if rec.sha256 != digest]
        return [TokenRecord(digest, ADMIN_PRINCIPAL, frozenset({Role.ADMIN})), *kept]

    update_tokens(paths.tokens_file, register)
    return admin


def write_secret_once(path: Path, text: str) -> bool:
    """Write ``text`` to a new file readable by its owner only (0600); False, and nothing written, if the file exists
    already — a secret is never overwritten. The file appears with all of ``text`` or not at all, so a process
    reading it meanwhile never sees it empty (issue #20)."""
    return publish_secret_once(path, text).written


def _admin_plaintext(paths: StackPaths) -> str:
    """Read ``admin.token``, or create it (0600, first writer wins) on first start."""
    path = paths.admin_token
    if path.is_file():
        existing = path.read_text().strip()
        if existing:
            return existing
        path.unlink()
    plaintext, _ = issue_token(ADMIN_PRINCIPAL, {Role.ADMIN})
    if not write_secret_once(path, plaintext + "\n"):  # another process created it meanwhile: theirs wins
        return path.read_text().strip()
    return plaintext
