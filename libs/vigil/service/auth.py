"""Bearer-token authentication and role checks, deny by default.

Every route declares the roles it accepts with ``Depends(require(Role.X, …))``; ``admin`` passes every check. A
test walks each app's routes and fails if one lacks a role requirement (health and metrics are the only open ones).
Tokens are read from the hashed token file and re-read when it changes (checked on every request), so issuing or
revoking a token needs no restart; a token's expiry is checked on every request too.
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vigil.service.tokens import DEV_ONLY_TOKENS, Role, TokenRecord, load_tokens, token_digest

_bearer = HTTPBearer(auto_error=False, description="Vigil API token (`vgl_…`)")


@dataclass(frozen=True)
class Principal:
    """Who is calling and with which roles."""

    name: str
    roles: frozenset[Role]

    @property
    def actor(self) -> str:
        """The actor string written into events (``user:<name>``)."""
        return self.name if ":" in self.name else f"user:{self.name}"

    def has_any(self, roles: frozenset[Role]) -> bool:
        return Role.ADMIN in self.roles or bool(self.roles & roles)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TokenStore:
    """Token file reader with reload-on-change. With ``refuse_dev_tokens`` (production), a token file holding a
    published development token is refused outright instead of silently accepting a well-known secret.

    "Changed" is the file's identity, not only its mtime: writers replace the file by renaming a new one over it
    (a new inode), and two writes within one mtime tick must not leave a revoked token usable."""

    def __init__(
        self, path: Path, *, refuse_dev_tokens: bool = False, clock: Callable[[], dt.datetime] = _utcnow
    ) -> None:
        self.path = path
        self.refuse_dev_tokens = refuse_dev_tokens
        self.clock = clock
        self._seen: tuple[int, int, int, int] | None = None
        self._records: dict[str, TokenRecord] = {}

    def lookup(self, token: str, *, include_expired: bool = False) -> TokenRecord | None:
        """The record of ``token`` as the file says now; None if unknown, or expired (unless ``include_expired``)."""
        self._reload_if_changed()
        digest = token_digest(token)
        for known, record in self._records.items():  # constant-time compare per entry
            if hmac.compare_digest(known, digest):
                return record if include_expired or not record.expired(self.clock()) else None
        return None

    def _reload_if_changed(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._records, self._seen = {}, None
            return
        seen = (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size)
        if seen != self._seen:
            records = load_tokens(self.path)
            if self.refuse_dev_tokens:
                published = {token_digest(t) for t in DEV_ONLY_TOKENS} & set(records)
                if published:
                    raise DevTokenInProduction(
                        f"{self.path} contains a published development token; issue real tokens for production"
                    )
            self._records = records
            self._seen = seen

    def check(self) -> None:
        """Load the file now (at start-up), so a bad token file stops the service before it serves."""
        self._reload_if_changed()


class DevTokenInProduction(RuntimeError):
    """A well-known development token was found in a production token file."""


class RoleRequirement:
    """A FastAPI dependency that authenticates the caller and checks one of ``roles``."""

    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        store: TokenStore = request.app.state.token_store
        record = store.lookup(credentials.credentials, include_expired=True)
        if record is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token", headers={"WWW-Authenticate": "Bearer"})
        if record.expired(store.clock()):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "token expired", headers={"WWW-Authenticate": "Bearer"})
        principal = Principal(record.principal, record.roles)
        if not principal.has_any(self.roles):
            needed = ", ".join(sorted(r.value for r in self.roles))
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"requires one of the roles: {needed}")
        request.state.principal = principal
        return principal

    def admits(self, store: TokenStore, authorization: str | None) -> Principal | None:
        """The caller's principal if an ``Authorization`` header value passes this requirement, else None (the
        dependency itself then answers why). For fast paths that answer without FastAPI's dependency solving."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token or token != token.strip():
            return None
        record = store.lookup(token)
        if record is None:
            return None
        principal = Principal(record.principal, record.roles)
        return principal if principal.has_any(self.roles) else None


def require(*roles: Role) -> RoleRequirement:
    """Dependency factory: ``user: Annotated[Principal, Depends(require(Role.VIEWER))]``."""
    return RoleRequirement(*roles)


Viewer = Annotated[Principal, Depends(require(Role.VIEWER, Role.SCIENTIST, Role.DEPLOYER, Role.RISK, Role.AUDITOR))]
Scientist = Annotated[Principal, Depends(require(Role.SCIENTIST))]
Deployer = Annotated[Principal, Depends(require(Role.DEPLOYER))]
#: Who may change the policies that judge models — validation gates, monitor thresholds and actions: a deployer or
#: a risk officer, not the scientist whose models they judge.
PolicyEditor = Annotated[Principal, Depends(require(Role.DEPLOYER, Role.RISK))]
Auditor = Annotated[Principal, Depends(require(Role.AUDITOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
