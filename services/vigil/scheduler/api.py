"""Scheduler HTTP API (``/v1``): retraining policies, manual triggers, jobs and their history, cancellation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, Field

from vigil.bus.context import Emitter
from vigil.events import new_id
from vigil.events.catalog.common import NAME_PATTERN, Params
from vigil.events.catalog.policies import RetrainingPolicyChanged
from vigil.events.catalog.training import Executor
from vigil.scheduler import store
from vigil.scheduler.cron import next_cron_time
from vigil.scheduler.ticker import Ticker
from vigil.service.auth import Scientist, Viewer
from vigil.service.bounds import BigIntCursor, SafeText
from vigil.service.deps import PoolDep, RuntimeDep
from vigil.service.pagination import After, Limit, Page

router = APIRouter(prefix="/v1", tags=["scheduler"])

ModelName = Annotated[str, Path(pattern=NAME_PATTERN, description="model name")]


class PolicyPublic(store.Policy):
    """A model's retraining policy as stored: every column is public."""


class TriggerRequest(BaseModel):
    """A manual trigger: the policy's params overridden by ``params`` and its executor by ``executor`` (null: the
    policy's); ``force`` makes a new job even for inputs that were already trained (a deliberate re-run). The
    executor is not an input of the idempotency key: a trigger that changes only it returns the job already made
    for those inputs, unless forced."""

    params: Params = Field(default_factory=dict)
    executor: Executor | None = Field(default=None, description="`local` or `ray` for this job; null = the policy's")
    force: bool = False


class JobPublic(store.JobBase):
    """A job as the API shows it (the row without its retry backoff and cause envelope)."""


class TransitionPublic(BaseModel):
    id: int
    from_state: str | None
    to_state: str
    attempt: int
    reason: str
    event_id: str
    actor: str
    at: datetime


class JobDetail(JobPublic):
    transitions: list[TransitionPublic]


class TriggerAccepted(BaseModel):
    job: JobPublic
    created: bool


class TriggerPublic(BaseModel):
    id: int
    model: str
    kind: str
    state: str
    opened_at: datetime
    due_at: datetime
    event_ids: list[str]
    signals: int
    job_id: str | None
    note: str
    closed_at: datetime | None


class RejectionPublic(BaseModel):
    id: int
    job_id: str
    current_state: str
    requested_state: str
    attempt: int | None
    event_id: str | None
    event_type: str | None
    detail: str
    at: datetime


def _job(job: store.Job) -> JobPublic:
    return JobPublic.model_validate(job, from_attributes=True)


def _policy(policy: store.Policy) -> PolicyPublic:
    return PolicyPublic.model_validate(policy, from_attributes=True)


@router.put("/policies/{model}", response_model=PolicyPublic)
async def put_policy(runtime: RuntimeDep, model: ModelName, body: store.PolicyBase, user: Scientist) -> PolicyPublic:
    """Create or replace the retraining policy of a model (its trigger datasets, schedule, training entrypoint and
    caps), audited as ``policy.retraining.changed`` with the policy before and after, in the same transaction."""
    values = {**body.model_dump(), "model": model, "next_cron_at": next_cron_time(body.cron) if body.cron else None}
    async with runtime.pool.acquire() as conn, conn.transaction():
        before = await store.get_policy(conn, model, lock=True)
        policy = await store.upsert_policy(conn, values, actor=user.actor)
        await _audit_change(Emitter(conn, runtime.source, user.actor), model, before, policy, user.actor)
    return _policy(policy)


async def _audit_change(
    emitter: Emitter, model: str, before: store.Policy | None, after: store.Policy | None, actor: str
) -> None:
    """Emit ``policy.retraining.changed``: the settings a user can set, as they were and as they are."""
    await emitter.emit(
        RetrainingPolicyChanged(
            model=model,
            change="created" if before is None else "deleted" if after is None else "updated",
            policy_version=after.revision if after is not None else None,
            before=_settings(before),
            after=_settings(after),
            changed_by=actor,
        )
    )


def _settings(policy: store.Policy | None) -> dict[str, Any] | None:
    return (
        None
        if policy is None
        else store.PolicyBase.model_validate(policy, from_attributes=True).model_dump(mode="json")
    )


@router.get("/policies", response_model=Page[PolicyPublic])
async def list_policies(pool: PoolDep, _user: Viewer, limit: Limit = 100, after: After = None) -> Page[PolicyPublic]:
    """Policies by model name."""
    async with pool.acquire() as conn:
        items = [_policy(p) for p in await store.list_policies(conn, limit=limit, after=after)]
    return Page(items=items, next=items[-1].model if len(items) == limit else None)


@router.get("/policies/{model}", response_model=PolicyPublic)
async def get_policy(pool: PoolDep, model: ModelName, _user: Viewer) -> PolicyPublic:
    """One model's policy."""
    async with pool.acquire() as conn:
        policy = await store.get_policy(conn, model)
    if policy is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no policy for model {model!r}")
    return _policy(policy)


@router.delete("/policies/{model}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_policy(runtime: RuntimeDep, model: ModelName, user: Scientist) -> Response:
    """Delete a policy (its open window is dropped; existing jobs run on); audited as ``policy.retraining.changed``."""
    async with runtime.pool.acquire() as conn, conn.transaction():
        before = await store.get_policy(conn, model, lock=True)
        deleted = await store.delete_policy(conn, model)
        if deleted:
            await _audit_change(Emitter(conn, runtime.source, user.actor), model, before, None, user.actor)
    if not deleted:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no policy for model {model!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/policies/{model}/trigger", response_model=TriggerAccepted)
async def trigger(
    runtime: RuntimeDep, response: Response, model: ModelName, body: TriggerRequest, user: Scientist
) -> TriggerAccepted:
    """Manual trigger: a job on the latest dataset versions (201), or the existing job with equal inputs (200)."""
    async with runtime.pool.acquire() as conn, conn.transaction():
        policy = await store.get_policy(conn, model)
        if policy is None or not policy.enabled:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no enabled policy for model {model!r}")
        refs, missing = await store.dataset_refs(conn, policy.datasets)
        if missing:
            raise HTTPException(status.HTTP_409_CONFLICT, f"no registered version yet of: {', '.join(missing)}")
        job, created = await store.create_job(
            conn,
            Emitter(conn, runtime.source, user.actor),
            policy,
            refs,
            trigger="manual",
            trigger_event_ids=[],
            cause=None,
            actor=user.actor,
            params=body.params,
            executor=body.executor,
            key_salt=new_id() if body.force else None,
        )
    runtime.parts.get(Ticker).wake()
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return TriggerAccepted(job=_job(job), created=created)


@router.get("/jobs", response_model=Page[JobPublic])
async def list_jobs(
    pool: PoolDep,
    _user: Viewer,
    model: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    state: Annotated[
        Literal["pending", "scheduled", "running", "succeeded", "failed", "cancelled"] | None, Query()
    ] = None,
    limit: Limit = 100,
    after: After = None,
) -> Page[JobPublic]:
    """Jobs, oldest first (ids are time-ordered)."""
    async with pool.acquire() as conn:
        items = [_job(j) for j in await store.list_jobs(conn, model=model, state=state, limit=limit, after=after)]
    return Page(items=items, next=items[-1].id if len(items) == limit else None)


JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-fA-F-]+$")]


@router.get("/jobs/{job_id}", response_model=JobDetail)
async def get_job(pool: PoolDep, job_id: JobId, _user: Viewer) -> JobDetail:
    """One job with every transition it went through."""
    async with pool.acquire() as conn:
        job = await store.get_job(conn, job_id)
        if job is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
        transitions = await store.transitions_of(conn, job_id)
    return JobDetail(**_job(job).model_dump(), transitions=[TransitionPublic.model_validate(t) for t in transitions])


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic)
async def cancel_job(runtime: RuntimeDep, job_id: JobId, user: Scientist) -> JobPublic:
    """Cancel a job that has not finished (409 if it has; the refusal is recorded)."""
    async with runtime.pool.acquire() as conn, conn.transaction():
        current = await store.get_job(conn, job_id)
        if current is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
        moved = await store.move(
            conn,
            Emitter(conn, runtime.source, user.actor),
            job_id,
            "cancelled",
            reason=f"cancelled by {user.actor}",
            cause=None,
            actor=user.actor,
        )
    if moved is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is {current.state}; it cannot be cancelled")
    runtime.parts.get(Ticker).wake()
    return _job(moved)


@router.get("/triggers", response_model=Page[TriggerPublic])
async def list_triggers(
    pool: PoolDep,
    _user: Viewer,
    model: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    limit: Limit = 100,
    after: BigIntCursor = 0,
) -> Page[TriggerPublic]:
    """Debounce windows: open ones and what each closed one became (job, duplicate, skipped)."""
    async with pool.acquire() as conn:
        rows = await store.list_triggers(conn, model, limit=limit, after=after)
    items = [TriggerPublic.model_validate(r) for r in rows]
    return Page(items=items, next=str(items[-1].id) if len(items) == limit else None)


@router.get("/rejected-transitions", response_model=Page[RejectionPublic])
async def list_rejections(
    pool: PoolDep,
    _user: Viewer,
    job_id: Annotated[SafeText | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    after: BigIntCursor = 0,
) -> Page[RejectionPublic]:
    """Transitions the state machine refused (out of order, stale attempt, already finished)."""
    async with pool.acquire() as conn:
        rows = await store.rejections(conn, job_id, limit=limit, after=after)
    items = [RejectionPublic.model_validate(r) for r in rows]
    return Page(items=items, next=str(items[-1].id) if len(items) == limit else None)
