"""Trainer HTTP API (``/v1``): runs, their logs, per-step metrics and artifacts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from pydantic import BaseModel

from vigil.artifacts.store import ArtifactError, ArtifactNotFound
from vigil.events.catalog.common import NAME_PATTERN
from vigil.service.auth import Principal, Viewer, require
from vigil.service.bounds import BigIntCursor, IntegerCursor, SafeText
from vigil.service.deps import PoolDep, RuntimeDep
from vigil.service.pagination import After, Limit, Page
from vigil.service.tokens import Role
from vigil.trainer import store

router = APIRouter(prefix="/v1", tags=["runs"])

RunId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-fA-F-]+$")]
ArtifactReader = Annotated[Principal, Depends(require(Role.SCIENTIST, Role.DEPLOYER))]


class RunPublic(store.RunBase):
    """A run as the API shows it (the row without its request envelope and profile size)."""


class LogLine(BaseModel):
    seq: int
    stream: str
    line: str
    at: datetime


class MetricPoint(BaseModel):
    id: int
    name: str
    step: int | None
    value: float
    at: datetime


class ArtifactPublic(BaseModel):
    kind: Literal["model", "reference_profile"]
    digest: str
    uri: str
    format: str
    size_bytes: int | None


async def _get_run(pool: asyncpg.Pool, run_id: str) -> store.Run:
    async with pool.acquire() as conn:
        run = await store.get_run(conn, run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id}")
    return run


def _artifacts(run: store.Run) -> list[ArtifactPublic]:
    items: list[ArtifactPublic] = []
    if run.artifact_digest and run.artifact_uri:
        items.append(
            ArtifactPublic(
                kind="model",
                digest=run.artifact_digest,
                uri=run.artifact_uri,
                format=run.artifact_format or "",
                size_bytes=run.artifact_size_bytes,
            )
        )
    if run.profile_digest:
        items.append(
            ArtifactPublic(
                kind="reference_profile",
                digest=run.profile_digest,
                uri=run.profile_uri or f"vigil-event://{run.completed_event_id}#reference_profile",
                format="json",
                size_bytes=run.profile_size_bytes,
            )
        )
    return items


@router.get("/runs", response_model=Page[RunPublic])
async def list_runs(
    pool: PoolDep,
    _user: Viewer,
    job_id: Annotated[SafeText | None, Query(max_length=64)] = None,
    model: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    state: Annotated[store.RunState | None, Query()] = None,
    limit: Limit = 100,
    after: After = None,
) -> Page[RunPublic]:
    """Runs, oldest first (one per job attempt)."""
    async with pool.acquire() as conn:
        runs = await store.list_runs(conn, job_id=job_id, model=model, state=state, limit=limit, after=after)
    items = [RunPublic.model_validate(r, from_attributes=True) for r in runs]
    return Page(items=items, next=items[-1].run_id if len(items) == limit else None)


@router.get("/runs/{run_id}", response_model=RunPublic)
async def get_run(pool: PoolDep, run_id: RunId, _user: Viewer) -> RunPublic:
    """One run: params, metrics, artifact, environment, outcome."""
    return RunPublic.model_validate(await _get_run(pool, run_id), from_attributes=True)


@router.get("/runs/{run_id}/logs", response_model=Page[LogLine])
async def get_run_logs(
    pool: PoolDep,
    run_id: RunId,
    _user: Viewer,
    limit: Limit = 500,
    after: IntegerCursor = 0,
) -> Page[LogLine]:
    """Captured stdout/stderr of the run's subprocess, in order (readable while the run goes on)."""
    await _get_run(pool, run_id)
    async with pool.acquire() as conn:
        rows = await store.run_logs(conn, run_id, after=after, limit=limit)
    items = [LogLine.model_validate(r) for r in rows]
    return Page(items=items, next=str(items[-1].seq) if len(items) == limit else None)


@router.get("/runs/{run_id}/metrics", response_model=Page[MetricPoint])
async def get_run_metrics(
    pool: PoolDep,
    run_id: RunId,
    _user: Viewer,
    name: Annotated[SafeText | None, Query(max_length=128)] = None,
    limit: Limit = 500,
    after: BigIntCursor = 0,
) -> Page[MetricPoint]:
    """Per-step metrics streamed by the entrypoint, in arrival order."""
    await _get_run(pool, run_id)
    async with pool.acquire() as conn:
        rows = await store.run_metrics(conn, run_id, name=name, after=after, limit=limit)
    items = [MetricPoint.model_validate(r) for r in rows]
    return Page(items=items, next=str(items[-1].id) if len(items) == limit else None)


@router.get("/runs/{run_id}/artifacts", response_model=list[ArtifactPublic])
async def list_run_artifacts(pool: PoolDep, run_id: RunId, _user: Viewer) -> list[ArtifactPublic]:
    """The model artifact and the reference profile a run produced (digests and URIs)."""
    return _artifacts(await _get_run(pool, run_id))


@router.get("/runs/{run_id}/artifacts/model")
async def download_model_artifact(runtime: RuntimeDep, run_id: RunId, _user: ArtifactReader) -> Response:
    """The model artifact's bytes, verified against its digest (JSON or npz; never pickle)."""
    run = await _get_run(runtime.pool, run_id)
    if not run.artifact_digest:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run_id} has no artifact")
    settings = runtime.settings
    artifacts = settings.artifact_store()
    try:
        data = artifacts.get(run.artifact_digest)
    except ArtifactNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except ArtifactError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    media = "application/json" if run.artifact_format == "json" else "application/octet-stream"
    return Response(data, media_type=media, headers={"X-Content-Digest": run.artifact_digest})
