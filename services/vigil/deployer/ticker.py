"""The deployer's clock: fires the timers of progressing rollouts (timed pauses, analysis timeouts).

Timers live in Postgres (``rollouts.wake_at``, compared with the database clock), so a restarted deployer — or
another replica — resumes a rollout exactly where the last one stopped. Each fired timer is one transaction that
locks the deployment first (like every other move) and re-checks that the timer is still due, so two replicas never
fire it twice.
"""

from __future__ import annotations

import logging

import asyncpg

from vigil.bus.context import Emitter
from vigil.deployer import control, store
from vigil.deployer.control import SERVICE_ACTOR, Warmer
from vigil.deployer.rollout import Rollout
from vigil.service.periodic import PeriodicTask

log = logging.getLogger(__name__)


class Ticker(PeriodicTask):
    """Background task started in ``on_start``; :meth:`wake` runs a tick early."""

    def __init__(self, pool: asyncpg.Pool, source: str, warm: Warmer, interval_ms: int = 500) -> None:
        super().__init__("deployer-ticker", interval_ms / 1000)
        self.pool = pool
        self.source = source
        self.warm = warm
        self.fired = 0

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
