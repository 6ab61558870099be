"""Registry HTTP API for lineage: the graph around a model version or a dataset version."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from vigil.registry.deps import DatasetName, ModelName, VersionNo, settings_of
from vigil.registry.lineage import Direction, LineageGraph, dataset_version_lineage, model_version_lineage
from vigil.service.auth import Viewer
from vigil.service.deps import RuntimeDep
from vigil.service.runtime import ServiceRuntime

router = APIRouter(prefix="/v1/lineage", tags=["lineage"])

MaxNodes = Annotated[int, Query(ge=1, le=5000, description="bound on the graph's size; `truncated` says if hit")]


async def _graph_or_404(
    runtime: ServiceRuntime,
    build: Callable[..., Awaitable[LineageGraph | None]],
    what: str,
    name: str,
    version: int,
    direction: str,
    max_nodes: int,
) -> LineageGraph:
    """Build one lineage graph; a 404 naming ``what`` when the version does not exist."""
    async with runtime.pool.acquire() as conn:
        graph = await build(
            conn, name, version, direction=direction, namespace=settings_of(runtime).lineage_namespace,
            max_nodes=max_nodes,
        )  # fmt: skip
    if graph is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{what} {name!r} has no version {version}")
    return graph


@router.get("/models/{name}/versions/{version}", response_model=LineageGraph)
async def model_lineage(
    runtime: RuntimeDep,
    name: ModelName,
    version: VersionNo,
    _user: Viewer,
    direction: Direction = "both",
    max_nodes: MaxNodes = 500,
) -> LineageGraph:
    """Upstream (datasets → jobs/runs) and downstream (deployments) of a model version."""
    return await _graph_or_404(runtime, model_version_lineage, "model", name, version, direction, max_nodes)


@router.get("/datasets/{name}/versions/{version}", response_model=LineageGraph)
async def dataset_lineage(
    runtime: RuntimeDep,
    name: DatasetName,
    version: VersionNo,
    _user: Viewer,
    direction: Direction = "both",
    max_nodes: MaxNodes = 500,
) -> LineageGraph:
    """Downstream of a dataset version: the runs that trained on it, their model versions and deployments."""
    return await _graph_or_404(runtime, dataset_version_lineage, "dataset", name, version, direction, max_nodes)
