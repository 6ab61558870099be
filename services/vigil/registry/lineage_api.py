"""Registry HTTP API for lineage: the graph around a model version or a dataset version."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from vigil.registry.deps import DatasetName, ModelName, VersionNo, settings_of
from vigil.registry.lineage import Direction, LineageGraph, dataset_version_lineage, model_version_lineage
from vigil.service.auth import Viewer
from vigil.service.deps import RuntimeDep

router = APIRouter(prefix="/v1/lineage", tags=["lineage"])

MaxNodes = Annotated[int, Query(ge=1, le=5000, description="bound on the graph's size; `truncated` says if hit")]


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
    async with runtime.pool.acquire() as conn:
        graph = await model_version_lineage(
            conn,
            name,
            version,
            direction=direction,
            namespace=settings_of(runtime).lineage_namespace,
            max_nodes=max_nodes,
        )
    if graph is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"model {name!r} has no version {version}")
    return graph


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
    async with runtime.pool.acquire() as conn:
        graph = await dataset_version_lineage(
            conn,
            name,
            version,
            direction=direction,
            namespace=settings_of(runtime).lineage_namespace,
            max_nodes=max_nodes,
        )
    if graph is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"dataset {name!r} has no version {version}")
    return graph
