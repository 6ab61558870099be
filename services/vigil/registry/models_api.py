"""Registry HTTP API for models: models, immutable versions, gate decisions and gate policies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from vigil.bus.context import Emitter
from vigil.events.catalog.common import (
    ArtifactFormat,
    ColumnSpec,
    DatasetRef,
    Digest,
    Labels,
    Metrics,
    Name,
    Opaque,
    Params,
)
from vigil.events.catalog.models import GateResult
from vigil.events.catalog.policies import GatePolicyChanged
from vigil.events.ids import new_id
from vigil.registry import store
from vigil.registry.artifact_check import check_artifact
from vigil.registry.decisions import NewVersion, decide_candidate, ensure_model
from vigil.registry.deps import ModelName, VersionNo, settings_of, store_of
from vigil.registry.gates import GatePolicy, GateSpec
from vigil.service.auth import PolicyEditor, Scientist, Viewer
from vigil.service.bounds import Integer, SafeText
from vigil.service.deps import PoolDep, RuntimeDep
from vigil.service.pagination import After, Limit, Page

router = APIRouter(prefix="/v1/models", tags=["models"])

VersionCursor = Annotated[Integer, Query(ge=0, description="cursor: the last version of the previous page")]
#: Free text of a body that lands in a text column.
Note = Annotated[SafeText, Field(max_length=1024)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelCreate(_Body):
    name: Name
    description: Note = ""
    tags: Labels = Field(default_factory=dict)


class ModelUpdate(_Body):
    description: Note | None = None
    tags: Labels | None = None


class ModelPublic(BaseModel):
    name: str
    description: str
    tags: dict[str, str]
    latest_version: int
    created_by: str
    created_at: datetime
    updated_at: datetime


class ManualVersionCreate(_Body):
    """A version registered by hand. The artifact must have been uploaded first (``POST /v1/artifacts``)."""

    artifact_digest: Digest
    params: Params = Field(default_factory=dict)
    metrics: Metrics = Field(default_factory=dict)
    signature: list[ColumnSpec] = Field(default_factory=list, max_length=4096)
    datasets: list[DatasetRef] = Field(default_factory=list, max_length=64)
    code_version: Annotated[SafeText, Field(min_length=1, max_length=128)] | None = None
    reference_profile: Opaque | None = None
    reference_profile_digest: Digest | None = None
    tags: Labels = Field(default_factory=dict)
    description: Note = ""


class ModelVersionPublic(BaseModel):
    model: str
    version: int
    source: Literal["training", "manual"]
    job_id: str | None
    run_id: str | None
    params: dict[str, Any]
    metrics: dict[str, float]
    artifact_digest: str
    artifact_uri: str
    artifact_format: ArtifactFormat
    artifact_size_bytes: int | None
    reference_profile: dict[str, Any] | None
    reference_profile_uri: str | None
    reference_profile_digest: str | None
    signature: list[ColumnSpec]
    artifact_signature: dict[str, Any] | None = Field(
        default=None, description="what the registry read from the artifact (ONNX: inputs, outputs, opset, producer)"
    )
    datasets: list[DatasetRef]
    code_version: str | None
    environment: dict[str, Any] | None
    tags: dict[str, str]
    description: str
    gates: list[GateResult]
    gate_policy_version: int | None
    source_event_id: str | None
    registered_event_id: str
    created_by: str
    created_at: datetime
    aliases: list[str] = Field(default_factory=list, description="aliases pointing at this version now")


class CandidatePublic(BaseModel):
    """One gate decision: a training run (or manual request) and whether it became a version."""

    model: str
    run_id: str
    source: Literal["training", "manual"]
    job_id: str | None
    attempt: int | None
    outcome: Literal["registered", "rejected"]
    version: int | None
    metrics: dict[str, float]
    artifact_digest: str
    datasets: list[DatasetRef]
    code_version: str | None
    gates: list[GateResult]
    gate_policy_version: int
    reason: str
    source_event_id: str | None
    decision_event_id: str
    decided_by: str
    decided_at: datetime


class GatePolicyPublic(BaseModel):
    model: str
    version: int
    gates: list[GateSpec]
    created_by: str
    created_at: datetime


async def _model_or_404(conn: Any, name: str) -> dict[str, Any]:
    found = await store.get_model(conn, name)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"model {name!r} does not exist")
    return found


def _tag_filter(tag: str | None) -> tuple[str, str] | None:
    if tag is None:
        return None
    key, sep, value = tag.partition("=")
    if not sep or not key:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "tag filter must look like key=value")
    return key, value


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ModelPublic)
async def create_model(runtime: RuntimeDep, body: ModelCreate, user: Scientist) -> ModelPublic:
    """Create a model (models are also created by their first training run)."""
    async with runtime.pool.acquire() as conn, conn.transaction():
        created = await ensure_model(Emitter(conn, runtime.source, user.actor), body.name, user.actor)
        if not created:
            raise HTTPException(status.HTTP_409_CONFLICT, f"model {body.name!r} already exists")
        row = await store.update_model(conn, body.name, description=body.description, tags=body.tags)
    return ModelPublic(**(row or {}))


@router.get("", response_model=Page[ModelPublic])
async def list_models(
    pool: PoolDep,
    _user: Viewer,
    limit: Limit = 100,
    after: After = None,
    name_prefix: Annotated[SafeText | None, Query(max_length=128, description="only names starting with this")] = None,
    tag: Annotated[SafeText | None, Query(max_length=300, description="only models with tag key=value")] = None,
) -> Page[ModelPublic]:
    """Models by name, searchable by name prefix and tag."""
    async with pool.acquire() as conn:
        rows = await store.list_models(conn, limit=limit, after=after, name_prefix=name_prefix, tag=_tag_filter(tag))
    items = [ModelPublic(**r) for r in rows]
    return Page(items=items, next=items[-1].name if len(items) == limit else None)


@router.get("/{name}", response_model=ModelPublic)
async def get_model(pool: PoolDep, name: ModelName, _user: Viewer) -> ModelPublic:
    """One model."""
    async with pool.acquire() as conn:
        return ModelPublic(**await _model_or_404(conn, name))


@router.patch("/{name}", response_model=ModelPublic)
async def update_model(pool: PoolDep, name: ModelName, body: ModelUpdate, _user: Scientist) -> ModelPublic:
    """Change a model's description or tags (its versions never change)."""
    async with pool.acquire() as conn:
        row = await store.update_model(conn, name, description=body.description, tags=body.tags)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"model {name!r} does not exist")
    return ModelPublic(**row)


@router.get("/{name}/versions", response_model=Page[ModelVersionPublic])
async def list_versions(
    pool: PoolDep, name: ModelName, _user: Viewer, limit: Limit = 100, after: VersionCursor = 0
) -> Page[ModelVersionPublic]:
    """Versions of a model, oldest first."""
    async with pool.acquire() as conn:
        rows = await store.list_model_versions(conn, name, limit=limit, after=after)
    items = [ModelVersionPublic(**r) for r in rows]
    return Page(items=items, next=str(items[-1].version) if len(items) == limit else None)


@router.get("/{name}/versions/{version}", response_model=ModelVersionPublic)
async def get_version(pool: PoolDep, name: ModelName, version: VersionNo, _user: Viewer) -> ModelVersionPublic:
    """One model version, with the aliases that point at it."""
    async with pool.acquire() as conn:
        row = await store.get_model_version(conn, name, version)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"model {name!r} has no version {version}")
        aliases = await store.aliases_of_version(conn, name, version)
    return ModelVersionPublic(**row, aliases=aliases)


@router.post("/{name}/versions", status_code=status.HTTP_201_CREATED, response_model=ModelVersionPublic)
async def register_version(
    runtime: RuntimeDep, name: ModelName, body: ManualVersionCreate, user: Scientist
) -> ModelVersionPublic:
    """Register a version by hand; the model's gates apply (422 with every gate's result when one fails)."""
    artifacts = store_of(runtime)
    async with runtime.pool.acquire() as conn:
        artifact = await store.get_artifact(conn, body.artifact_digest)
    if artifact is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"artifact {body.artifact_digest} was not uploaded; upload it with POST /v1/artifacts first",
        )
    checked = await check_artifact(
        artifacts,
        body.artifact_digest,
        artifact["format"],
        body.signature,
        max_bytes=settings_of(runtime).onnx_max_bytes,
    )
    async with runtime.pool.acquire() as conn, conn.transaction():
        existing = await store.find_version_by_artifact(conn, name, body.artifact_digest)
        if existing is not None:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"model {name!r} v{existing} already has artifact {body.artifact_digest}"
            )
        decision = await decide_candidate(
            Emitter(conn, runtime.source, user.actor),
            None,
            user.actor,
            NewVersion(
                model=name,
                run_id=f"manual-{new_id()}",
                source="manual",
                artifact_digest=body.artifact_digest,
                artifact_uri=artifacts.uri(body.artifact_digest),
                artifact_format=artifact["format"],
                artifact_size_bytes=artifact["size_bytes"],
                params=dict(body.params),
                metrics=dict(body.metrics),
                reference_profile=body.reference_profile,
                reference_profile_digest=body.reference_profile_digest,
                signature=list(body.signature),
                datasets=list(body.datasets),
                code_version=body.code_version,
                tags=dict(body.tags),
                description=body.description,
                artifact=checked,
            ),
        )
        aliases = await store.aliases_of_version(conn, name, decision.version["version"]) if decision.version else []
    runtime.relay.wake()
    if decision.version is None:
        # Committed: the rejection is recorded and announced (model.version.rejected); the caller gets the evidence.
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            {
                "message": decision.candidate["reason"],
                "decision_event_id": decision.candidate["decision_event_id"],
                "gate_policy_version": decision.candidate["gate_policy_version"],
                "gates": [g.model_dump(mode="json") for g in decision.gates],
            },
        )
    return ModelVersionPublic(**decision.version, aliases=aliases)


@router.get("/{name}/candidates", response_model=Page[CandidatePublic])
async def list_candidates(
    pool: PoolDep,
    name: ModelName,
    _user: Viewer,
    limit: Limit = 100,
    after: After = None,
    outcome: Literal["registered", "rejected"] | None = None,
) -> Page[CandidatePublic]:
    """Gate decisions on a model's training runs and manual requests (rejections carry their evidence)."""
    async with pool.acquire() as conn:
        rows = await store.list_candidates(conn, name, outcome=outcome, limit=limit, after=after)
    items = [CandidatePublic(**r) for r in rows]
    return Page(items=items, next=items[-1].decision_event_id if len(items) == limit else None)


@router.get("/{name}/gates", response_model=GatePolicyPublic)
async def get_gates(pool: PoolDep, name: ModelName, _user: Viewer) -> GatePolicyPublic:
    """The model's current gate policy."""
    async with pool.acquire() as conn:
        await _model_or_404(conn, name)
        row = await store.current_policy(conn, name)
    assert row is not None
    return GatePolicyPublic(**row)


@router.put("/{name}/gates", response_model=GatePolicyPublic)
async def put_gates(runtime: RuntimeDep, name: ModelName, body: GatePolicy, user: PolicyEditor) -> GatePolicyPublic:
    """Replace the model's gates; stored as a new policy version that later decisions name, and audited as
    ``policy.gates.changed`` (before and after) in the same transaction. Needs ``deployer`` or ``risk``: the
    scientist whose model the gates judge may not move them (separation of duties)."""
    async with runtime.pool.acquire() as conn, conn.transaction():
        emitter = Emitter(conn, runtime.source, user.actor)
        await ensure_model(emitter, name, user.actor)
        await store.lock_model(conn, name)
        before = await store.current_policy(conn, name)
        row = await store.insert_policy(conn, name, body.model_dump(mode="json")["gates"], actor=user.actor)
        await emitter.emit(
            GatePolicyChanged(
                model=name,
                change="updated" if before is not None else "created",
                policy_version=row["version"],
                before={"gates": before["gates"]} if before is not None else None,
                after={"gates": row["gates"]},
                changed_by=user.actor,
            )
        )
    return GatePolicyPublic(**row)


@router.get("/{name}/gates/versions", response_model=Page[GatePolicyPublic])
async def list_gate_policies(
    pool: PoolDep, name: ModelName, _user: Viewer, limit: Limit = 100, after: VersionCursor = 0
) -> Page[GatePolicyPublic]:
    """Every gate policy version of the model, oldest first."""
    async with pool.acquire() as conn:
        rows = await store.list_policies(conn, name, limit=limit, after=after)
    items = [GatePolicyPublic(**r) for r in rows]
    return Page(items=items, next=str(items[-1].version) if len(items) == limit else None)
