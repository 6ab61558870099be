"""Training logs expire: a run's log lines are deleted once they are older than ``trainer_log_retention_days``.

Why: user training code writes what it likes to stdout — row samples, feature values, a patient's record in an
exception message — and the trainer keeps those lines to show them (``GET /v1/runs/{id}/logs``). Kept forever they
would be a store of personal data nobody reviews. The run itself (state, params, metrics, artifacts, digests) stays:
that is the record of what was trained; the raw log is only for debugging it. Checked hourly, deleted in bounded
batches so a large backlog never holds a long transaction.
"""

from __future__ import annotations

import logging

import asyncpg

from vigil.service.periodic import PeriodicTask

log = logging.getLogger(__name__)

BATCH = 10_000


class LogExpiry(PeriodicTask):
    """Delete run log lines older than the retention period (0 days: keep them forever)."""

    def __init__(self, pool: asyncpg.Pool, retention_days: float, interval_s: float = 3600.0) -> None:
        super().__init__("trainer-log-expiry", interval_s)
        self.pool = pool
        self.retention_days = retention_days
        self.expired_total = 0

    async def tick(self) -> int:
        if self.retention_days <= 0:
            return 0
        expired = 0
        while True:
            async with self.pool.acquire() as conn:
                result = await conn.execute(
                    "DELETE FROM run_logs WHERE ctid = ANY(ARRAY(SELECT ctid FROM run_logs "
                    "WHERE at < now() - make_interval(secs => $1) LIMIT $2))",
                    self.retention_days * 86_400,
                    BATCH,
                )
            deleted = int(result.split()[-1])
            expired += deleted
            if deleted < BATCH:
                break
        if expired:
            self.expired_total += expired
            log.info("expired training log lines", extra={"rows": expired, "days": self.retention_days})
        return expired
