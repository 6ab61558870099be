"""The scheduler's clock: fires due debounce windows and cron schedules, re-queues timed-out jobs, dispatches.

Everything the ticker acts on is a row (an open trigger with its ``due_at``, a policy's ``next_cron_at``, a job's
``deadline_at`` / ``next_attempt_at``), so a restarted scheduler — or another replica — picks up exactly where the
last one stopped. Each step runs in its own transaction with ``FOR UPDATE SKIP LOCKED`` (replicas share the work);
dispatch holds a transaction-level advisory lock so the concurrency caps are counted by one replica at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncpg

from vigil.bus.context import Emitter
from vigil.events import Envelope
from vigil.events.catalog.common import DatasetRef
from vigil.events.catalog.training import TrainingRequested
from vigil.scheduler import store
from vigil.scheduler.cron import next_cron_time
from vigil.scheduler.machine import after_failure, backoff_s
from vigil.scheduler.settings import SchedulerSettings
from vigil.service.periodic import PeriodicTask

log = logging.getLogger(__name__)

_DISPATCH_LOCK = 0x56_49_47_49_4C_01  # pg_advisory_xact_lock key: one dispatcher at a time per database schema


class Ticker(PeriodicTask):
    """A background task started in the service's ``on_start``; :meth:`wake` runs a tick early."""

    def __init__(self, pool: asyncpg.Pool, settings: SchedulerSettings, source: str) -> None:
        super().__init__("scheduler-ticker", settings.scheduler_tick_interval_ms / 1000)
        self.pool = pool
        self.settings = settings
        self.source = source
        self.ticks = 0

    async def tick(self) -> None:
        """One pass: cron → due windows → timeouts → dispatch."""
        await self._step(self.fire_cron)
        await self._step(self.fire_due_triggers)
        await self._step(self.requeue_overdue)
        await self._step(self.dispatch)
        self.ticks += 1

    async def _step(self, step: Callable[[asyncpg.Connection, Emitter], Awaitable[None]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await step(conn, Emitter(conn, self.source, store.SERVICE_ACTOR))

    async def fire_cron(self, conn: asyncpg.Connection, _emitter: Emitter) -> None:
        """Policies whose cron time passed open (or join) a window that is due at once."""
        rows = await conn.fetch(
            "SELECT model, cron FROM policies WHERE enabled AND cron IS NOT NULL AND next_cron_at <= now() "
            "FOR UPDATE SKIP LOCKED"
        )
        for row in rows:
            await store.signal(conn, row["model"], "schedule", debounce_s=0.0, event_id=None, cause=None)
            await conn.execute(
                "UPDATE policies SET next_cron_at = $2 WHERE model = $1", row["model"], next_cron_time(row["cron"])
            )

    async def fire_due_triggers(self, conn: asyncpg.Connection, emitter: Emitter) -> None:
        """Windows whose time is up become jobs (one per window, deduplicated by idempotency key)."""
        for trig in await store.due_triggers(conn, limit=100):
            policy = await store.get_policy(conn, trig["model"])
            if policy is None or not policy.enabled:
                await store.close_trigger(conn, trig["id"], "skipped", note="no enabled policy for the model")
                continue
            refs, missing = await store.dataset_refs(conn, policy.datasets)
            if missing:
                note = f"no registered version yet of: {', '.join(missing)}"
                await store.close_trigger(conn, trig["id"], "skipped", note=note)
                log.warning("trigger skipped", extra={"model": policy.model, "note": note})
                continue
            cause = Envelope.model_validate(trig["cause"]) if trig["cause"] else None
            job, created = await store.create_job(
                conn,
                emitter,
                policy,
                refs,
                trigger=trig["kind"],
                trigger_event_ids=list(trig["event_ids"]),
                cause=cause,
                actor=store.SERVICE_ACTOR,
            )
            if created:
                await store.close_trigger(conn, trig["id"], "fired", job_id=job.id)
            else:
                await store.close_trigger(
                    conn, trig["id"], "deduplicated", job_id=job.id, note=f"same inputs as job {job.id} ({job.state})"
                )

    async def requeue_overdue(self, conn: asyncpg.Connection, emitter: Emitter) -> None:
        """Scheduled jobs no trainer took, and running jobs whose trainer vanished: next attempt, or failed."""
        for job in await store.overdue_jobs(conn, limit=100):
            why = (
                "no trainer started it in time"
                if job.state == "scheduled"
                else f"no outcome {job.timeout_s:g}s + grace after it started: trainer vanished"
            )
            if after_failure(job.attempt, job.max_attempts, retryable=True) == "retry":
                await store.move(
                    conn,
                    emitter,
                    job.id,
                    "pending",
                    reason=f"timed out: {why}; re-queued",
                    cause=job.cause_envelope(),
                    retry_in_s=backoff_s(job.attempt, job.backoff_base_s, job.backoff_max_s),
                )
            else:
                await store.move(
                    conn,
                    emitter,
                    job.id,
                    "failed",
                    reason=f"timed out: {why}; attempts exhausted ({job.attempt}/{job.max_attempts})",
                    cause=job.cause_envelope(),
                )

    async def dispatch(self, conn: asyncpg.Connection, emitter: Emitter) -> None:
        """Pending jobs → scheduled + ``training.requested``, within the global and per-model caps."""
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _DISPATCH_LOCK)
        active = await store.active_counts(conn)
        free = self.settings.scheduler_max_concurrent_jobs - sum(active.values())
        if free <= 0:
            return
        for job, model_cap in await store.ready_jobs(conn, limit=500):
            if free <= 0:
                break
            if active.get(job.model, 0) >= model_cap:
                continue
            moved = await store.move(
                conn,
                emitter,
                job.id,
                "scheduled",
                reason=f"dispatched attempt {job.attempt}",
                cause=job.cause_envelope(),
                deadline_in_s=self.settings.scheduler_dispatch_timeout_s,
            )
            if moved is None:
                continue
            await emitter.emit(
                TrainingRequested(
                    model=job.model,
                    job_id=job.id,
                    attempt=job.attempt,
                    idempotency_key=job.idempotency_key,
                    entrypoint=job.entrypoint,
                    params=job.params,
                    datasets=[DatasetRef.model_validate(d) for d in job.datasets],
                    code_version=job.code_version,
                    trigger=job.trigger,
                    trigger_event_ids=job.trigger_event_ids[-256:],
                    priority=max(-1000, min(1000, job.priority)),
                    timeout_s=job.timeout_s,
                    memory_limit_mb=job.memory_limit_mb,
                    executor=job.executor,
                ),
                cause=job.cause_envelope(),
            )
            active[job.model] = active.get(job.model, 0) + 1
            free -= 1
