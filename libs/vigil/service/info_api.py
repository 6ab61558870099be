"""``GET /v1/info``: what this service is, what it consumes and which migrations it has applied."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from vigil.service.auth import Viewer
from vigil.service.deps import RuntimeDep

router = APIRouter(prefix="/v1", tags=["service"])


class MigrationPublic(BaseModel):
    component: str
    version: int
    name: str
    applied_at: datetime


class ServiceInfo(BaseModel):
    service: str
    consumed_topics: list[str]
    handled_event_types: list[str]
    migrations: list[MigrationPublic]
    outbox_pending: int
    dead_letters: int


@router.get("/info", response_model=ServiceInfo)
async def info(runtime: RuntimeDep, _user: Viewer) -> ServiceInfo:
    """This service's identity, subscriptions and schema state."""
    async with runtime.pool.acquire() as conn:
        migrations = await conn.fetch(
            "SELECT component, version, name, applied_at FROM schema_migrations ORDER BY applied_at, version"
        )
        pending = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        dead = await conn.fetchval("SELECT count(*) FROM dead_letters WHERE status = 'dead'")
    consumer = runtime.consumer
    return ServiceInfo(
        service=runtime.definition.name,
        consumed_topics=list(runtime.definition.consumed_topics),
        handled_event_types=sorted(consumer.handlers) if consumer is not None else [],
        migrations=[MigrationPublic(**dict(m)) for m in migrations],
        outbox_pending=pending,
        dead_letters=dead,
    )
