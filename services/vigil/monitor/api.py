"""Monitor HTTP API (``/v1``): health per deployment, window figures, policies, and the what-if replay."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from vigil.bus.context import Emitter
from vigil.events.catalog.common import NAME_PATTERN
from vigil.events.catalog.policies import MonitorPolicyChanged
from vigil.monitor import store
from vigil.monitor.decisions import replay as replay_policy
from vigil.monitor.engine import MonitorEngine
from vigil.monitor.policy import Policy
from vigil.service.auth import PolicyEditor, Scientist, Viewer
from vigil.service.bounds import BigIntCursor, Integer
from vigil.service.deps import PoolDep, RuntimeDep
from vigil.service.pagination import Limit, Page
from vigil.service.runtime import ServiceRuntime

MAX_REPLAY_WINDOWS = 5000  # a bounded what-if: narrow start/end to replay further back

router = APIRouter(prefix="/v1", tags=["monitor"])

DeploymentName = Annotated[str, Path(pattern=NAME_PATTERN, description="deployment name")]


class VersionHealth(BaseModel):
    version: int
    variant: str
    revision: int
    window: dict[str, Any]
    predictions: int
    labels: int
    drifted_features: list[str]
    quality: dict[str, float]
    latency: dict[str, Any] | None
    error_rate: float | None
    fairness: dict[str, float]
    #: label-free estimate (± band) beside the realised figures, when the version's profile carries a calibration
    estimated: dict[str, Any] | None = None
    #: multivariate reconstruction error with its band, the OOD share and the domain classifier's AUROC
    #: (``domain_classifier``), when the profile carries a PCA reference
    multivariate: dict[str, Any] | None = None


class DeploymentHealth(BaseModel):
    deployment: str
    status: str  # ok | degraded (a decision in the latest windows) | unknown (no window yet)
    policy_version: int
    versions: list[VersionHealth]
    recent_decisions: list[dict[str, Any]]


class WindowPublic(BaseModel):
    id: int
    revision: int
    event_id: str
    closed_at: datetime
    updated_at: datetime
    figures: dict[str, Any]


class PolicyPublic(BaseModel):
    deployment: str
    version: int
    stored: bool
    policy: Policy


class ReplayRequest(BaseModel):
    deployment: str = Field(pattern=NAME_PATTERN)
    policy: Policy | None = None  # None: the current policy
    start: datetime | None = None
    end: datetime | None = None


class ReplayResult(BaseModel):
    deployment: str
    windows: int
    policy_version: int | None
    decisions: list[dict[str, Any]]


async def _health(runtime: ServiceRuntime, deployment: str) -> DeploymentHealth:
    async with runtime.pool.acquire() as conn:
        version, policy, _ = await store.current_policy(conn, deployment)
        rows = await store.latest_windows(conn, deployment)
        decisions = await store.recent_decisions(conn, deployment, 10)
    from vigil.monitor.rules import drifted_features

    versions = []
    for r in rows:
        fig = store._json(r["figures"])
        versions.append(
            VersionHealth(
                version=r["version"],
                variant=r["variant"],
                revision=r["revision"],
                window={"start": fig["start"], "end": fig["end"]},
                predictions=fig["predictions"],
                labels=fig["labels"],
                drifted_features=sorted(drifted_features(policy, fig)),
                quality=fig["quality"],
                latency=fig["latency"],
                error_rate=fig["error_rate"],
                fairness=fig["fairness"],
                estimated=fig.get("estimated"),
                multivariate=fig.get("multivariate"),
            )
        )
    latest = {v.window["start"] for v in versions}
    acting = [d for d in decisions if d["event_type"] != "analysis.verdict" or d["payload"].get("verdict") == "Failed"]
    degraded = any(v.drifted_features for v in versions) or any(
        d["payload"].get("window", {}).get("start") in latest for d in acting
    )
    status = "unknown" if not versions else ("degraded" if degraded else "ok")
    return DeploymentHealth(
        deployment=deployment, status=status, policy_version=version, versions=versions, recent_decisions=decisions
    )


@router.get("/health", response_model=list[DeploymentHealth])
async def all_health(runtime: RuntimeDep, _user: Viewer) -> list[DeploymentHealth]:
    """Current health of every deployment the monitor has seen (latest closed window per version)."""
    async with runtime.pool.acquire() as conn:
        names = sorted({r["deployment"] for r in await store.latest_windows(conn, None)})
    return [await _health(runtime, n) for n in names]


@router.get("/deployments/{deployment}/health", response_model=DeploymentHealth)
async def deployment_health(runtime: RuntimeDep, deployment: DeploymentName, _user: Viewer) -> DeploymentHealth:
    """Current health of one deployment."""
    return await _health(runtime, deployment)


@router.get("/windows", response_model=Page[WindowPublic])
async def list_windows(
    pool: PoolDep,
    _user: Viewer,
    deployment: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    version: Annotated[Integer | None, Query(ge=1)] = None,
    kind: Annotated[str | None, Query(pattern="^(tumbling|rolling)$")] = None,
    limit: Limit = 100,
    after: BigIntCursor = 0,
) -> Page[WindowPublic]:
    """Closed windows with their figures, oldest first (keyset pagination)."""
    after_id = after
    async with pool.acquire() as conn:
        rows = await store.list_windows(
            conn, deployment=deployment, version=version, kind=kind, after_id=after_id, limit=limit
        )
    items = [WindowPublic(**{**dict(r), "figures": store._json(r["figures"])}) for r in rows]
    return Page(items=items, next=str(items[-1].id) if len(items) == limit else None)


@router.get("/policies/{deployment}", response_model=PolicyPublic)
async def get_policy(pool: PoolDep, deployment: DeploymentName, _user: Viewer) -> PolicyPublic:
    """The policy in force for a deployment (the default when none is stored)."""
    async with pool.acquire() as conn:
        version, policy, stored = await store.current_policy(conn, deployment)
    return PolicyPublic(deployment=deployment, version=version, stored=stored, policy=policy)


@router.put("/policies/{deployment}", response_model=PolicyPublic)
async def put_policy(runtime: RuntimeDep, deployment: DeploymentName, body: Policy, user: PolicyEditor) -> PolicyPublic:
    """Store a new version of a deployment's policy (thresholds, minimum samples, actions), audited as
    ``policy.monitor.changed`` with the policy before and after, in the same transaction. Needs ``deployer`` or
    ``risk``: a scientist may not loosen the rules that roll their own model back."""
    async with runtime.pool.acquire() as conn, conn.transaction():
        _, before, stored = await store.current_policy(conn, deployment)
        version = await store.put_policy(conn, deployment, body, user.name)
        await Emitter(conn, runtime.source, user.actor).emit(
            MonitorPolicyChanged(
                deployment=deployment,
                change="updated" if stored else "created",
                policy_version=version,
                # The default policy judged until now (version 1, not stored) is what this one replaces.
                before=before.model_dump(mode="json"),
                after=body.model_dump(mode="json"),
                changed_by=user.actor,
            )
        )
    engine = runtime.parts.find(MonitorEngine)
    if engine is not None:
        engine.policies.forget(deployment)
    return PolicyPublic(deployment=deployment, version=version, stored=True, policy=body)


@router.get("/policies/{deployment}/versions")
async def policy_history(pool: PoolDep, deployment: DeploymentName, _user: Viewer) -> list[dict[str, Any]]:
    """Every stored version of a deployment's policy."""
    async with pool.acquire() as conn:
        return await store.policy_versions(conn, deployment)


@router.post("/replay", response_model=ReplayResult)
async def replay(pool: PoolDep, body: ReplayRequest, _user: Scientist) -> ReplayResult:
    """What-if: re-judge stored window figures under a (changed) policy; report the decisions, emit nothing."""
    async with pool.acquire() as conn:
        figures = await store.figures_between(conn, body.deployment, body.start, body.end, limit=MAX_REPLAY_WINDOWS)
        if body.policy is None:
            version, policy, _ = await store.current_policy(conn, body.deployment)
            policy_version: int | None = version
        else:
            policy, policy_version = body.policy, None
    # CPU-bound: off the event loop that also runs the consumer and the window closer.
    decisions = await asyncio.to_thread(replay_policy, policy, policy_version or 1, figures)
    return ReplayResult(
        deployment=body.deployment,
        windows=len(figures),
        policy_version=policy_version,
        decisions=[{"type": d.payload.TYPE, "dedupe_key": d.dedupe_key, **d.payload.to_data()} for d in decisions],
    )
