"""Bearer-token authentication and role checks, deny by default.

Every route declares the roles it accepts with ``Depends(require(Role.X, …))``; ``admin`` passes every check. A
test walks each app's routes and fails if one lacks a role requirement (health and metrics are the only open ones).
Tokens are read from the hashed token file and re-read when it changes, so issuing a token needs no restart.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vigil.service.tokens import Role, TokenRecord, load_tokens, token_digest

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


class TokenStore:
    """Token file reader with reload-on-change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._records: dict[str, TokenRecord] = {}

    def lookup(self, token: str) -> TokenRecord | None:
        self._reload_if_changed()
        digest = token_digest(token)
        for known, record in self._records.items():  # constant-time compare per entry
            if hmac.compare_digest(known, digest):
                return record
        return None

    def _reload_if_changed(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._records, self._mtime = {}, None
            return
        if mtime != self._mtime:
            self._records = load_tokens(self.path)
            self._mtime = mtime


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
        record = store.lookup(credentials.credentials)
        if record is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token", headers={"WWW-Authenticate": "Bearer"})
        principal = Principal(record.principal, record.roles)
        if not principal.has_any(self.roles):
            needed = ", ".join(sorted(r.value for r in self.roles))
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"requires one of the roles: {needed}")
        request.state.principal = principal
        return principal


def require(*roles: Role) -> RoleRequirement:
    """Dependency factory: ``user: Annotated[Principal, Depends(require(Role.VIEWER))]``."""
    return RoleRequirement(*roles)


Viewer = Annotated[Principal, Depends(require(Role.VIEWER, Role.SCIENTIST, Role.DEPLOYER, Role.AUDITOR))]
Scientist = Annotated[Principal, Depends(require(Role.SCIENTIST))]
Deployer = Annotated[Principal, Depends(require(Role.DEPLOYER))]
Auditor = Annotated[Principal, Depends(require(Role.AUDITOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
