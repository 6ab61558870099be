"""Trainer event handlers: one function per consumed event type, named after it.

Nothing here trains. ``training.requested`` becomes a queued run in the same transaction as the inbox row, and the
worker pool picks it up — so the consumer keeps polling however long training takes. ``job.state_changed`` from the
scheduler stops runs the scheduler no longer wants (cancelled, or re-queued as a new attempt).
"""

from __future__ import annotations

from functools import partial

from vigil.bus.consumer import Handler
from vigil.bus.context import HandlerContext
from vigil.events import new_id
from vigil.events.catalog.training import JobStateChanged, TrainingRequested
from vigil.service.runtime import ServiceRuntime
from vigil.trainer import store
from vigil.trainer.worker import WorkerPool


async def on_training_requested(ctx: HandlerContext, payload: TrainingRequested, *, runtime: ServiceRuntime) -> None:
    """Queue the attempt as a run (idempotent per job × attempt); older attempts of the job are superseded."""
    if await store.enqueue_run(ctx.conn, new_id(), ctx.event, payload):
        ctx.after_commit(runtime.parts.get(WorkerPool).wake)


async def on_job_state_changed(ctx: HandlerContext, payload: JobStateChanged) -> None:
    """Stop runs of a job the scheduler cancelled or re-queued (a newer attempt will come, or none)."""
    if payload.to_state == "cancelled":
        await store.stop_runs(ctx.conn, payload.job_id, f"cancelled: {payload.reason}"[:1024], cancelled=True)
    elif payload.to_state == "pending" and payload.from_state in ("scheduled", "running"):
        await store.stop_runs(
            ctx.conn,
            payload.job_id,
            f"superseded: the scheduler re-queued attempt {payload.attempt}",
            attempt=payload.attempt,
        )


def build_handlers(runtime: ServiceRuntime) -> dict[str, Handler]:
    """Event type → handler (``training.requested`` gets the runtime bound: it wakes the worker pool)."""
    return {
        TrainingRequested.TYPE: partial(on_training_requested, runtime=runtime),
        JobStateChanged.TYPE: on_job_state_changed,
    }
