"""Scheduler event handlers: one function per consumed event type, named after it.

Signals (``dataset.version.registered``, ``retrain.requested``) only open or join a model's debounce window — the
ticker turns due windows into jobs. Trainer reports (``training.*``) drive the job state machine; each is checked
against the job's current state *and attempt*, so a report from a superseded attempt is refused and recorded.
"""

from __future__ import annotations

from functools import partial

from vigil.bus.consumer import Handler
from vigil.bus.context import HandlerContext
from vigil.events.catalog.data import DatasetVersionRegistered
from vigil.events.catalog.monitoring import RetrainRequested
from vigil.events.catalog.training import TrainingCompleted, TrainingFailed, TrainingStarted
from vigil.scheduler import store
from vigil.scheduler.machine import after_failure, backoff_s
from vigil.scheduler.settings import SchedulerSettings
from vigil.scheduler.ticker import Ticker
from vigil.service.runtime import ServiceRuntime


async def on_dataset_version_registered(ctx: HandlerContext, payload: DatasetVersionRegistered) -> None:
    """A dataset version exists: remember it, and open/join the window of every model trained on it."""
    await store.record_dataset_version(
        ctx.conn, payload.dataset, payload.version, payload.content_digest, payload.uri, ctx.event.id
    )
    for policy in await store.policies_for_dataset(ctx.conn, payload.dataset):
        await store.signal(
            ctx.conn, policy.model, "dataset", debounce_s=policy.debounce_s, event_id=ctx.event.id, cause=ctx.event
        )


async def on_retrain_requested(ctx: HandlerContext, payload: RetrainRequested) -> None:
    """The monitor asks for a retrain: the same window, caps and cooldown as a data update."""
    policy = await store.get_policy(ctx.conn, payload.model)
    if policy is None or not policy.enabled:
        store.log.warning("retrain.requested for a model without an enabled policy", extra={"model": payload.model})
        return
    await store.signal(
        ctx.conn, policy.model, "retrain", debounce_s=policy.debounce_s, event_id=ctx.event.id, cause=ctx.event
    )


async def on_training_started(ctx: HandlerContext, payload: TrainingStarted, *, runtime: ServiceRuntime) -> None:
    """scheduled → running; the deadline becomes timeout + grace (past it, the trainer has vanished)."""
    settings = runtime.settings
    assert isinstance(settings, SchedulerSettings)
    job = await store.get_job(ctx.conn, payload.job_id)
    timeout_s = job.timeout_s if job is not None else 0.0
    await store.move(
        ctx.conn,
        ctx.emitter,
        payload.job_id,
        "running",
        reason=f"run {payload.run_id} started on {payload.worker}",
        cause=ctx.event,
        event_attempt=payload.attempt,
        run_id=payload.run_id,
        deadline_in_s=timeout_s + settings.scheduler_running_grace_s,
    )


async def on_training_completed(ctx: HandlerContext, payload: TrainingCompleted, *, runtime: ServiceRuntime) -> None:
    """running → succeeded (only for the current attempt: a second completion is refused and recorded)."""
    moved = await store.move(
        ctx.conn,
        ctx.emitter,
        payload.job_id,
        "succeeded",
        reason=f"run {payload.run_id} completed",
        cause=ctx.event,
        event_attempt=payload.attempt,
        run_id=payload.run_id,
        result={
            "run_id": payload.run_id,
            "event_id": ctx.event.id,
            "artifact_digest": payload.artifact_digest,
            "artifact_uri": payload.artifact_uri,
            "metrics": payload.metrics,
        },
    )
    if moved is not None:
        ctx.after_commit(runtime.parts.get(Ticker).wake)


async def on_training_failed(ctx: HandlerContext, payload: TrainingFailed, *, runtime: ServiceRuntime) -> None:
    """A failed attempt: retry with exponential backoff while attempts remain and the failure is retryable."""
    job = await store.get_job(ctx.conn, payload.job_id)
    if job is None:
        await store.move(ctx.conn, ctx.emitter, payload.job_id, "failed", reason="unknown job", cause=ctx.event)
        return
    what = f"attempt {payload.attempt} failed ({payload.reason}): {payload.error}"
    if after_failure(payload.attempt, job.max_attempts, payload.retryable) == "retry":
        delay = backoff_s(payload.attempt, job.backoff_base_s, job.backoff_max_s)
        moved = await store.move(
            ctx.conn,
            ctx.emitter,
            job.id,
            "pending",
            reason=f"{what}; retry in {delay:g}s",
            cause=ctx.event,
            event_attempt=payload.attempt,
            retry_in_s=delay,
        )
    else:
        final = "not retryable" if not payload.retryable else f"attempts exhausted ({job.max_attempts})"
        moved = await store.move(
            ctx.conn,
            ctx.emitter,
            job.id,
            "failed",
            reason=f"{what}; {final}",
            cause=ctx.event,
            event_attempt=payload.attempt,
        )
    if moved is not None:
        ctx.after_commit(runtime.parts.get(Ticker).wake)


def build_handlers(runtime: ServiceRuntime) -> dict[str, Handler]:
    """Event type → handler; the ones that read settings or wake the ticker get the runtime bound."""
    return {
        DatasetVersionRegistered.TYPE: on_dataset_version_registered,
        RetrainRequested.TYPE: on_retrain_requested,
        TrainingStarted.TYPE: partial(on_training_started, runtime=runtime),
        TrainingCompleted.TYPE: partial(on_training_completed, runtime=runtime),
        TrainingFailed.TYPE: partial(on_training_failed, runtime=runtime),
    }
