"""Registry HTTP API for aliases: current pointers, moves by hand, and the history that answers "what did
``champion`` point to at time T, who moved it, and which event caused it"."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from vigil.bus.context import Emitter
from vigil.registry import store
from vigil.registry.decisions import CHAMPION, UnknownModelVersion, move_alias
from vigil.registry.deps import AliasMover, AliasName, ModelName
from vigil.service.auth import Principal, Viewer
from vigil.service.bounds import BigIntCursor, Cursor, Integer, SafeText
from vigil.service.deps import PoolDep, RuntimeDep
from vigil.service.pagination import Limit, Page
from vigil.service.runtime import ServiceRuntime
from vigil.service.tokens import Role

router = APIRouter(prefix="/v1/models/{name}/aliases", tags=["aliases"])

#: Aliases only the deployer (or an admin) may move: they decide what serves.
PROTECTED_ALIASES = frozenset({CHAMPION})


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Annotated[Integer, Field(ge=1)]
    reason: Annotated[SafeText, Field(max_length=1024)] = ""


class AliasPublic(BaseModel):
    model: str
    alias: str
    version: int
    updated_by: str
    updated_at: datetime
    event_id: str


class AliasChangePublic(BaseModel):
    """One change of an alias: from → to (null = deleted), who, why, and the event that caused it."""

    id: int
    model: str
    alias: str
    from_version: int | None
    to_version: int | None
    cause: Literal["api", "promotion", "rollback"]
    actor: str
    deployment: str | None
    reason: str
    event_id: str
    cause_event_id: str | None
    changed_at: datetime


class AliasAt(BaseModel):
    """The alias as it was at ``at``: ``version`` (null if it had been deleted) and the change that set it."""

    model: str
    alias: str
    at: datetime
    version: int | None
    change: AliasChangePublic


def _check_may_move(user: Principal, alias: str) -> None:
    if alias in PROTECTED_ALIASES and not user.has_any(frozenset({Role.DEPLOYER})):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"moving {alias!r} requires one of the roles: admin, deployer")


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


async def _move(
    runtime: ServiceRuntime, name: str, alias: str, version: int | None, reason: str, user: Principal
) -> Any:
    _check_may_move(user, alias)
    try:
        async with runtime.pool.acquire() as conn, conn.transaction():
            row = await move_alias(
                Emitter(conn, runtime.source, user.actor),
                model=name,
                alias=alias,
                to_version=version,
                cause="api",
                actor=user.actor,
                reason=reason,
            )
    except UnknownModelVersion as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    runtime.relay.wake()
    return row


@router.get("", response_model=Page[AliasPublic])
async def list_aliases(
    pool: PoolDep,
    name: ModelName,
    _user: Viewer,
    limit: Limit = 100,
    after: Annotated[
        Cursor | None, Query(max_length=128, description="cursor: the last alias of the previous page")
    ] = None,
) -> Page[AliasPublic]:
    """The model's aliases and the versions they point at now."""
    async with pool.acquire() as conn:
        rows = await store.list_aliases(conn, name, limit=limit, after=after)
    items = [AliasPublic(**r) for r in rows]
    return Page(items=items, next=items[-1].alias if len(items) == limit else None)


@router.get("/{alias}", response_model=AliasAt)
async def get_alias(
    pool: PoolDep,
    name: ModelName,
    alias: AliasName,
    _user: Viewer,
    at: Annotated[datetime | None, Query(description="point in time (RFC 3339); default now")] = None,
) -> AliasAt:
    """What the alias points at now, or pointed at at time ``at``, and who moved it there because of what."""
    when = _aware(at) if at is not None else datetime.now(UTC)
    async with pool.acquire() as conn:
        row = await store.alias_at(conn, name, alias, when)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"alias {alias!r} of model {name!r} was not set at {when}")
    change = AliasChangePublic(**row)
    return AliasAt(model=name, alias=alias, at=when, version=change.to_version, change=change)


@router.get("/{alias}/history", response_model=Page[AliasChangePublic])
async def alias_history(
    pool: PoolDep,
    name: ModelName,
    alias: AliasName,
    _user: Viewer,
    limit: Limit = 100,
    after: BigIntCursor = 0,
    since: Annotated[datetime | None, Query(description="only changes at or after this time")] = None,
    until: Annotated[datetime | None, Query(description="only changes at or before this time")] = None,
) -> Page[AliasChangePublic]:
    """Every change of the alias, oldest first."""
    async with pool.acquire() as conn:
        rows = await store.alias_history(
            conn,
            name,
            alias,
            limit=limit,
            after=after,
            since=_aware(since) if since else None,
            until=_aware(until) if until else None,
        )
    items = [AliasChangePublic(**r) for r in rows]
    return Page(items=items, next=str(items[-1].id) if len(items) == limit else None)


@router.put("/{alias}", response_model=AliasChangePublic | None)
async def set_alias(
    runtime: RuntimeDep, name: ModelName, alias: AliasName, body: AliasSet, user: AliasMover
) -> AliasChangePublic | None:
    """Point the alias at a version (``champion`` needs deployer or admin); null when it already pointed there."""
    row = await _move(runtime, name, alias, body.version, body.reason, user)
    return AliasChangePublic(**row) if row else None


@router.delete("/{alias}", response_model=AliasChangePublic)
async def delete_alias(
    runtime: RuntimeDep,
    name: ModelName,
    alias: AliasName,
    user: AliasMover,
    reason: Annotated[SafeText, Query(max_length=1024)] = "",
) -> AliasChangePublic:
    """Remove the alias (``champion`` needs deployer or admin); its history stays."""
    row = await _move(runtime, name, alias, None, reason, user)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"alias {alias!r} of model {name!r} is not set")
    return AliasChangePublic(**row)
