"""Registry HTTP API (``/v1``): data updates in, datasets and versions out."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from pydantic import BaseModel

from vigil.artifacts import digest_of
from vigil.artifacts.store import MAX_ARTIFACT_BYTES
from vigil.bus.context import Emitter
from vigil.bus.outbox import enqueue
from vigil.bus.tracing import current_traceparent
from vigil.datasets.locations import announcement_refusal, artifact_digest
from vigil.events import make_event
from vigil.events.catalog.data import DIGEST_PATTERN, NAME_PATTERN, ColumnSpec, DataUpdated
from vigil.registry import store
from vigil.registry.artifacts_api import read_bounded
from vigil.registry.deps import VersionNo, settings_of, store_of
from vigil.registry.handlers import apply_data_updated
from vigil.service.auth import Scientist, Viewer
from vigil.service.bounds import IntegerCursor
from vigil.service.deps import PoolDep, RuntimeDep
from vigil.service.pagination import After, Limit, Page
from vigil.service.runtime import ServiceRuntime

router = APIRouter(prefix="/v1", tags=["datasets"])

DatasetName = Annotated[str, Path(pattern=NAME_PATTERN, description="dataset name")]


class DatasetPublic(BaseModel):
    name: str
    latest_version: int
    created_at: datetime


class DatasetVersionPublic(BaseModel):
    dataset: str
    version: int
    content_digest: str
    uri: str
    columns: list[ColumnSpec]
    row_count: int
    producer: str
    parent_version: int | None
    source_event_id: str
    registered_event_id: str
    created_by: str
    created_at: datetime


class DataUpdateAccepted(BaseModel):
    event_id: str
    dataset: str
    version: int
    created: bool


def _public(v: store.DatasetVersion) -> DatasetVersionPublic:
    return DatasetVersionPublic.model_validate(v, from_attributes=True)


class DatasetFileStored(BaseModel):
    digest: str
    uri: str
    size_bytes: int
    created: bool


@router.post(
    "/dataset-files",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetFileStored,
    openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {}}}},
)
async def upload_dataset_file(
    request: Request,
    runtime: RuntimeDep,
    _user: Scientist,
    digest: Annotated[str, Query(pattern=DIGEST_PATTERN, description="sha256:<64 hex> of the bytes sent")],
) -> DatasetFileStored:
    """Copy a dataset file (raw body) into the content-addressed store, verified against ``digest`` (encrypted at
    rest when the store has a key); announce it with the returned ``vigil-artifact://`` URI, which every trainer
    reads. The body is bounded by ``http_max_body_bytes``."""
    settings = settings_of(runtime)
    data = await read_bounded(request, min(settings.http_max_body_bytes, MAX_ARTIFACT_BYTES))
    if not data:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "empty dataset file")
    actual = await asyncio.to_thread(digest_of, data)
    if actual != digest:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"the bytes received do not match {digest} (got {actual}); nothing was stored",
        )
    artifacts = store_of(runtime)
    existed = await asyncio.to_thread(artifacts.exists, digest)
    await asyncio.to_thread(artifacts.put, data)
    return DatasetFileStored(digest=digest, uri=artifacts.uri(digest), size_bytes=len(data), created=not existed)


async def _location_refusal(runtime: ServiceRuntime, update: DataUpdated) -> str | None:
    """Why no trainer could read the announced version (file outside the roots, object not in the store)."""
    settings = settings_of(runtime)
    refusal = announcement_refusal(update.uri, update.content_digest, settings.resolved_dataset_roots())
    if refusal is not None:
        return refusal
    stored = artifact_digest(update.uri)
    if stored is not None and not await asyncio.to_thread(store_of(runtime).exists, stored):
        return f"{update.uri} is not in the artifact store; upload it first (POST /v1/dataset-files)"
    return None


@router.post("/data-updates", status_code=status.HTTP_201_CREATED, response_model=DataUpdateAccepted)
async def post_data_update(runtime: RuntimeDep, update: DataUpdated, user: Scientist) -> DataUpdateAccepted:
    """Announce new data (the `data.updated` upstream contract over HTTP); registers the dataset version.

    Refused (422, nothing recorded) when no trainer could read it: a ``file://`` URI outside the dataset roots (the
    answer names them), or a ``vigil-artifact://`` URI whose object is not in the store or is not the version's
    digest."""
    refusal = await _location_refusal(runtime, update)
    if refusal is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, refusal)
    envelope = make_event(update, source=f"{runtime.source}/api", actor=user.actor, traceparent=current_traceparent())
    async with runtime.pool.acquire() as conn, conn.transaction():
        # Published like any upstream event (the auditor records it); our own consumer will skip it via the inbox.
        await enqueue(conn, envelope)
        await conn.execute(
            'INSERT INTO inbox (event_id, event_type, topic, partition, "offset") VALUES ($1, $2, $3, -1, -1)',
            envelope.id,
            envelope.type,
            "http",
        )
        version, created = await apply_data_updated(Emitter(conn, runtime.source, user.actor), envelope, update)
    return DataUpdateAccepted(event_id=envelope.id, dataset=version.dataset, version=version.version, created=created)


@router.get("/datasets", response_model=Page[DatasetPublic])
async def list_datasets(pool: PoolDep, _user: Viewer, limit: Limit = 100, after: After = None) -> Page[DatasetPublic]:
    """Datasets by name."""
    async with pool.acquire() as conn:
        rows = await store.list_datasets(conn, limit=limit, after=after)
    items = [DatasetPublic(**r) for r in rows]
    return Page(items=items, next=items[-1].name if len(items) == limit else None)


@router.get("/datasets/{name}/versions", response_model=Page[DatasetVersionPublic])
async def list_dataset_versions(
    pool: PoolDep,
    name: DatasetName,
    _user: Viewer,
    limit: Limit = 100,
    after: IntegerCursor = 0,
) -> Page[DatasetVersionPublic]:
    """Versions of one dataset, oldest first."""
    async with pool.acquire() as conn:
        versions = await store.list_versions(conn, name, limit=limit, after=after)
    items = [_public(v) for v in versions]
    return Page(items=items, next=str(items[-1].version) if len(items) == limit else None)


@router.get("/datasets/{name}/versions/{version}", response_model=DatasetVersionPublic)
async def get_dataset_version(
    pool: PoolDep, name: DatasetName, version: VersionNo, _user: Viewer
) -> DatasetVersionPublic:
    """One dataset version."""
    async with pool.acquire() as conn:
        found = await store.get_version(conn, name, version)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"dataset {name!r} has no version {version}")
    return _public(found)
