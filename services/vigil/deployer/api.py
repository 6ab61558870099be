"""Deployer HTTP API: deployments, their rollouts, and the moves a human with the deployer role may make.

Reads need any role (``Viewer``); every move needs ``deployer`` (or admin). Moves run in one transaction with their
events (outbox); a move that does not fit the rollout's state is refused with 409 and the reason, and the refusal
itself is kept in the rollout's history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from vigil.bus.context import Emitter
from vigil.deployer import control, store
from vigil.deployer.control import Outcome
from vigil.deployer.gateway import ModelCache
from vigil.deployer.rollout import PlanError, Rollout, validate_steps
from vigil.deployer.serving_state import ServingState
from vigil.deployer.settings import DeployerSettings
from vigil.events.catalog.common import Name
from vigil.events.catalog.data import NAME_PATTERN
from vigil.events.catalog.deployments import (
    MAX_LOGGED_ATTRIBUTES,
    AttributeName,
    DeploymentCreated,
    StepSpec,
    Strategy,
)
from vigil.service.auth import Deployer, Principal, Viewer
from vigil.service.bounds import Integer, SafeText
from vigil.service.deps import PoolDep, RuntimeDep, part_of
from vigil.service.pagination import After, Limit, Page
from vigil.service.runtime import ServiceRuntime

router = APIRouter(prefix="/v1/deployments", tags=["deployments"])

DeploymentName = Annotated[str, Path(pattern=NAME_PATTERN, description="deployment (endpoint) name")]
RolloutId = Annotated[SafeText, Path(min_length=1, max_length=64, description="rollout id")]
#: A model version as the deployer stores it (INTEGER columns).
VersionNo = Annotated[Integer, Field(ge=1)]


#: The gateway's model cache (a part added in ``on_start``); moves warm candidates with it.
ModelsDep = Annotated[ModelCache, Depends(part_of(ModelCache))]


# ---------------------------------------------------------------------------------------------- models
class DeploymentCreate(BaseModel):
    """A new endpoint. ``steps`` empty = the strategy's default plan (see docs/deployer.md)."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    model: Name
    strategy: Strategy = "canary"
    steps: list[StepSpec] = Field(default_factory=list, max_length=64)
    auto_deploy: Literal["auto", "manual"] = "manual"
    min_samples: int | None = Field(default=None, ge=1, le=100_000_000)
    stable_version: VersionNo | None = None
    #: Request fields the gateway logs beside each prediction (for the monitor's fairness and segments), never
    #: feeds to the model; only these are logged (docs/deployer.md, logged attributes).
    logged_attributes: list[AttributeName] = Field(default_factory=list, max_length=MAX_LOGGED_ATTRIBUTES)

    @field_validator("logged_attributes")
    @classmethod
    def _distinct(cls, names: list[str]) -> list[str]:
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"logged_attributes names {repeated} more than once")
        return names


class WeightsPublic(BaseModel):
    stable: int
    candidate: int


class RolloutPublic(BaseModel):
    id: str
    deployment: str
    strategy: str
    stable_version: int
    candidate_version: int
    steps: list[StepSpec]
    min_samples: int
    trigger: str
    phase: str
    step_index: int
    weight: int
    pause_reason: str | None
    awaiting_verdict: bool
    wake_at: datetime | None
    approved_by: str | None
    verdict_event_id: str | None
    started_by: str
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class HistoryEntry(BaseModel):
    """One move tried on a rollout: accepted (with the events it emitted) or rejected (with the reason)."""

    action: str
    accepted: bool
    from_phase: str
    to_phase: str
    step_index: int
    actor: str
    detail: str
    cause_event_id: str | None
    event_ids: list[str]
    at: datetime


class RolloutDetail(RolloutPublic):
    history: list[HistoryEntry]


class DeploymentPublic(BaseModel):
    name: str
    model: str
    strategy: str
    steps: list[StepSpec]
    auto_deploy: str
    min_samples: int
    stable_version: int | None
    candidate_version: int | None
    logged_attributes: list[str]
    weights: WeightsPublic
    mirror: bool
    previous_version: int | None
    pending_version: int | None
    rollout: RolloutPublic | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class RolloutStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: VersionNo


class MoveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[SafeText, Field(max_length=1024)] = ""


def _rollout_public(row: asyncpg.Record) -> RolloutPublic:
    data = dict(row)
    data["steps"] = store.steps_of(data["steps"])
    return RolloutPublic.model_validate({k: v for k, v in data.items() if k in RolloutPublic.model_fields})


async def _deployment_public(conn: asyncpg.Connection, row: asyncpg.Record) -> DeploymentPublic:
    rollout = None
    if row["rollout_id"] is not None:
        rollout_row = await store.get_rollout(conn, row["rollout_id"])
        rollout = _rollout_public(rollout_row) if rollout_row is not None else None
    candidate = row["candidate_weight"] if row["candidate_version"] is not None else 0
    stable = 0 if row["stable_version"] is None else 100 - candidate
    data: dict[str, Any] = {k: row[k] for k in DeploymentPublic.model_fields if k in row}
    data.update(steps=store.steps_of(row["steps"]), weights=WeightsPublic(stable=stable, candidate=candidate))
    return DeploymentPublic(**data, rollout=rollout)


async def _load(pool: asyncpg.Pool, name: str) -> DeploymentPublic:
    async with pool.acquire() as conn:
        row = await store.get_deployment(conn, name)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no deployment {name}")
        return await _deployment_public(conn, row)


async def _after_move(runtime: ServiceRuntime, name: str) -> DeploymentPublic:
    """The deployment as the committed move left it. This gateway's serving state is refreshed first, so the
    caller's next request here is served the new way even before the move's NOTIFY arrives (read-your-writes)."""
    await runtime.parts.get(ServingState).refresh(name)
    return await _load(runtime.pool, name)


def _raise_unless_accepted(outcome: Outcome) -> None:
    if not outcome.accepted:
        code = status.HTTP_404_NOT_FOUND if outcome.kind == "not_found" else status.HTTP_409_CONFLICT
        raise HTTPException(code, outcome.error)


# ---------------------------------------------------------------------------------------------- routes
@router.post("", status_code=status.HTTP_201_CREATED, response_model=DeploymentPublic)
async def create_deployment(
    body: DeploymentCreate, runtime: RuntimeDep, models: ModelsDep, user: Deployer
) -> DeploymentPublic:
    """Create an endpoint (strategy, step plan, auto-deploy policy), optionally already serving a stable version."""
    settings = runtime.settings
    assert isinstance(settings, DeployerSettings)
    try:
        steps = validate_steps(body.strategy, body.steps)
    except PlanError as exc:
        raise HTTPException(422, str(exc)) from exc
    min_samples = body.min_samples or settings.default_min_samples
    async with runtime.pool.acquire() as conn, conn.transaction():
        if body.stable_version is not None:
            mv = await store.get_model_version(conn, body.model, body.stable_version)
            if mv is None:
                raise HTTPException(
                    422,
                    f"model {body.model} has no registered version {body.stable_version}",
                )
            try:
                await models.warm(mv["artifact_digest"])
            except Exception as exc:
                raise HTTPException(422, f"version {body.stable_version} cannot serve: {exc}") from exc
            model = await models.get(mv["artifact_digest"])
            features = sorted(set(body.logged_attributes) & set(model.feature_names))
            if features:  # later versions may take one as a feature: it is then that version's feature, not logged
                raise HTTPException(
                    422,
                    f"logged_attributes {features} are features of version {body.stable_version}: the model gets"
                    " them, they are logged with the features",
                )
        created = await store.insert_deployment(
            conn,
            name=body.name,
            model=body.model,
            strategy=body.strategy,
            steps=steps,
            auto_deploy=body.auto_deploy,
            min_samples=min_samples,
            stable_version=body.stable_version,
            created_by=user.actor,
            logged_attributes=body.logged_attributes,
        )
        if not created:
            raise HTTPException(status.HTTP_409_CONFLICT, f"deployment {body.name} exists")
        await Emitter(conn, runtime.source, user.actor).emit(
            DeploymentCreated(
                deployment=body.name,
                model=body.model,
                strategy=body.strategy,
                stable_version=body.stable_version,
                auto_deploy=body.auto_deploy,
                steps=steps,
                logged_attributes=body.logged_attributes,
            )
        )
    return await _after_move(runtime, body.name)


@router.get("", response_model=Page[DeploymentPublic])
async def list_deployments(pool: PoolDep, _user: Viewer, limit: Limit = 100, after: After = None) -> Page[Any]:
    """Deployments by name, with what each serves now."""
    async with pool.acquire() as conn:
        rows = await store.list_deployments(conn, after=after, limit=limit)
        items = [await _deployment_public(conn, r) for r in rows]
    return Page(items=items, next=items[-1].name if len(items) == limit else None)


@router.get("/{name}", response_model=DeploymentPublic)
async def get_deployment(name: DeploymentName, pool: PoolDep, _user: Viewer) -> DeploymentPublic:
    """One deployment: stable and candidate versions, weights, the rollout in flight, a pending version."""
    return await _load(pool, name)


@router.get("/{name}/rollouts", response_model=Page[RolloutPublic])
async def list_rollouts(
    name: DeploymentName, pool: PoolDep, _user: Viewer, limit: Limit = 50, after: After = None
) -> Page[Any]:
    """Rollouts of a deployment, newest first."""
    async with pool.acquire() as conn:
        rows = await store.list_rollouts(conn, name, after=after, limit=limit)
    items = [_rollout_public(r) for r in rows]
    return Page(items=items, next=items[-1].id if len(items) == limit else None)


@router.get("/{name}/rollouts/{rollout_id}", response_model=RolloutDetail)
async def get_rollout(name: DeploymentName, rollout_id: RolloutId, pool: PoolDep, _user: Viewer) -> RolloutDetail:
    """One rollout with every move tried on it (accepted and rejected)."""
    async with pool.acquire() as conn:
        row = await store.get_rollout(conn, rollout_id)
        if row is None or row["deployment"] != name:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no rollout {rollout_id} on {name}")
        entries = await store.history(conn, rollout_id)
    public = _rollout_public(row)
    history = [HistoryEntry.model_validate({k: e[k] for k in HistoryEntry.model_fields}) for e in entries]
    return RolloutDetail(**public.model_dump(), history=history)


@router.post("/{name}/rollouts", status_code=status.HTTP_201_CREATED, response_model=DeploymentPublic)
async def start_rollout(
    name: DeploymentName, body: RolloutStart, runtime: RuntimeDep, models: ModelsDep, user: Deployer
) -> DeploymentPublic:
    """Roll a registered version out under the deployment's strategy (the manual auto-deploy policy's start)."""
    async with runtime.pool.acquire() as conn, conn.transaction():
        outcome = await control.start_rollout(
            conn,
            Emitter(conn, runtime.source, user.actor),
            deployment=name,
            version=body.version,
            trigger="api",
            actor=user.actor,
            warm=models.warm,
        )
    _raise_unless_accepted(outcome)
    if outcome.error:  # committed: the rollout was recorded and aborted, the candidate never served
        raise HTTPException(422, outcome.error)
    return await _after_move(runtime, name)


async def _move_active(
    runtime: ServiceRuntime, models: ModelCache, name: str, user: Principal, action: str, apply: Any
) -> DeploymentPublic:
    async with runtime.pool.acquire() as conn, conn.transaction():
        dep = await store.get_deployment(conn, name, lock=True)
        if dep is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no deployment {name}")
        if dep["rollout_id"] is None:
            raise HTTPException(status.HTTP_409_CONFLICT, f"no rollout in progress on {name}")
        outcome = await control.move(
            conn,
            Emitter(conn, runtime.source, user.actor),
            deployment=name,
            rollout_id=dep["rollout_id"],
            action=action,
            actor=user.actor,
            apply=apply,
            warm=models.warm,
        )
    _raise_unless_accepted(outcome)
    return await _after_move(runtime, name)


@router.post("/{name}/pause", response_model=DeploymentPublic)
async def pause(
    name: DeploymentName, body: MoveBody, runtime: RuntimeDep, models: ModelsDep, user: Deployer
) -> DeploymentPublic:
    """Halt the rollout in flight where it is (traffic split unchanged)."""

    def apply(r: Rollout) -> None:
        r.pause(body.reason or f"paused by {user.actor}")

    return await _move_active(runtime, models, name, user, "pause", apply)


@router.post("/{name}/resume", response_model=DeploymentPublic)
async def resume(
    name: DeploymentName, body: MoveBody, runtime: RuntimeDep, models: ModelsDep, user: Deployer
) -> DeploymentPublic:
    """Continue a paused rollout: past a manual gate (recorded as the approver), or re-run the current step."""

    def apply(r: Rollout) -> None:
        r.resume(user.actor, body.reason)

    return await _move_active(runtime, models, name, user, "resume", apply)


@router.post("/{name}/promote", response_model=DeploymentPublic)
async def promote(
    name: DeploymentName, body: MoveBody, runtime: RuntimeDep, models: ModelsDep, user: Deployer
) -> DeploymentPublic:
    """Promote the candidate now, skipping the remaining steps (a human decision, recorded as the approver)."""

    def apply(r: Rollout) -> None:
        r.promote(user.actor)

    return await _move_active(runtime, models, name, user, "promote", apply)


@router.post("/{name}/abort", response_model=DeploymentPublic)
async def abort(
    name: DeploymentName, body: MoveBody, runtime: RuntimeDep, models: ModelsDep, user: Deployer
) -> DeploymentPublic:
    """Stop the rollout without promotion; traffic returns to stable (the candidate is not marked failed)."""

    def apply(r: Rollout) -> None:
        r.abort(body.reason or f"aborted by {user.actor}")

    return await _move_active(runtime, models, name, user, "abort", apply)


@router.post("/{name}/rollback", response_model=DeploymentPublic)
async def rollback(
    name: DeploymentName, body: MoveBody, runtime: RuntimeDep, models: ModelsDep, user: Deployer
) -> DeploymentPublic:
    """All traffic back to stable now; the candidate is marked failed. After a promotion, the previous stable
    (kept warm) serves again."""
    async with runtime.pool.acquire() as conn, conn.transaction():
        outcome = await control.rollback(
            conn,
            Emitter(conn, runtime.source, user.actor),
            deployment=name,
            trigger="api",
            reason=body.reason or f"rolled back by {user.actor}",
            actor=user.actor,
            warm=models.warm,
        )
    _raise_unless_accepted(outcome)
    return await _after_move(runtime, name)
