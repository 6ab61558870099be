"""The deployer's clock: fires the timers of progressing rollouts (timed pauses, analysis timeouts).

Timers live in Postgres (``rollouts.wake_at``, compared with the database clock), so a restarted deployer — or
another replica — resumes a rollout exactly where the last one stopped. Each fired timer is one transaction that
locks the deployment first (like every other move) and re-checks that the timer is still due, so two replicas never
fire it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from vigil.bus.context import Emitter
from vigil.deployer import control, store
from vigil.deployer.control import SERVICE_ACTOR, Warmer
from vigil.deployer.rollout import Rollout

log = logging.getLogger(__name__)


class Ticker:
    """Background task started in ``on_start``; :meth:`wake` runs a tick early."""

    def __init__(self, pool: asyncpg.Pool, source: str, warm: Warmer, interval_ms: int = 500) -> None:
        self.pool = pool
        self.source = source
        self.warm = warm
        self.interval_s = interval_ms / 1000
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.fired = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="deployer-ticker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("deployer tick failed; the next tick retries")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)

    async def tick(self) -> int:
        """Fire every due timer; returns how many fired."""
        async with self.pool.acquire() as conn:
            due = await store.due_rollouts(conn)
        fired = 0
        for deployment, rollout_id in due:
            async with self.pool.acquire() as conn, conn.transaction():
                await store.get_deployment(conn, deployment, lock=True)
                still_due = await conn.fetchval(
                    "SELECT phase = 'progressing' AND wake_at <= now() FROM rollouts WHERE id = $1", rollout_id
                )
                if not still_due:
                    continue  # another replica (or a move meanwhile) got there first

                def apply(rollout: Rollout) -> None:
                    rollout.timer_fired()

                outcome = await control.move(
                    conn,
                    Emitter(conn, self.source, SERVICE_ACTOR),
                    deployment=deployment,
                    rollout_id=rollout_id,
                    action="timer",
                    actor=SERVICE_ACTOR,
                    apply=apply,
                    warm=self.warm,
                )
                fired += outcome.accepted
        self.fired += fired
        return fired
