"""The audit log is its own outbox: ``audit.entry`` events are published from ``audit_log`` rows.

Every ``audit_log`` row already holds everything its ``audit.entry`` event says, and it commits atomically with
the chain, so writing a second row per entry into the outbox would only copy it. Instead, this background task
reads the entries after a durable cursor (``audit_publish_cursor.last_seq``) in seq order, sends their events to
vigil.audit, waits for the broker's acks and only then advances the cursor — at-least-once, in seq order, exactly
what the outbox relay guarantees for the other events. Writers commit in seq order (they serialise on the chain
lock), so the entries after the cursor are never overtaken by a later commit.

- **Wake-up.** ``append_entries`` sends ``NOTIFY vigil_audit_<schema>`` in the appending transaction (delivered at
  commit); the publisher LISTENs on it and also polls every ``poll_s`` (≤ 200 ms) in case a notification is lost —
  the loop the outbox relay uses too (:class:`vigil.bus.wakeup.NotifyWakeup`: reconnects, no lost wake-ups).
- **Replicas.** The cursor row is locked ``FOR UPDATE SKIP LOCKED`` while a batch is in flight: one publisher
  publishes at a time, the others skip.
- **Ids.** An entry's event id is derived from (chain, seq) (:func:`vigil.auditor.feed.entry_event_id`) and its
  bytes from the row, so a republished entry is the same event, byte for byte.
- **Broker loss.** :func:`rewind` moves the cursor back over the retention window (entries recorded within
  ``retention_s``); the runtime calls it through ``ServiceDefinition.on_broker_loss``.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from vigil.auditor.feed import ENTRY_EVENT_COLUMNS, entry_record
from vigil.auditor.store import notify_channel
from vigil.bus.metrics import REPUBLISHED
from vigil.bus.producer import BusProducer
from vigil.bus.wakeup import NotifyWakeup

log = logging.getLogger(__name__)


async def rewind(pool: asyncpg.Pool, retention_s: float) -> int:
    """Move the cursor back to before the first entry recorded within ``retention_s``; returns how many entries
    will be published again. Never moves it forward. Waits for a batch in flight (it holds the cursor row)."""
    async with pool.acquire() as conn, conn.transaction():
        before = await conn.fetchval("SELECT last_seq FROM audit_publish_cursor FOR UPDATE")
        # Scans back from the head only as far as the window reaches (recorded_at grows with seq).
        after = await conn.fetchval(
            "UPDATE audit_publish_cursor SET rewound_at = now(), last_seq = LEAST(last_seq, coalesce(("
            "SELECT seq FROM audit_log WHERE recorded_at <= now() - make_interval(secs => $1) "
            "ORDER BY seq DESC LIMIT 1), 0)) RETURNING last_seq",
            retention_s,
        )
    if before is None or after is None:
        return 0
    return int(before - after)


class EntryPublisher:
    """Publishes ``audit.entry`` for every committed entry after the cursor, in seq order; advances after acks."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: BusProducer,
        *,
        chain: str,
        schema: str,
        service: str = "auditor",
        batch_size: int = 1000,
        poll_s: float = 0.2,
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.chain = chain
        self.schema = schema
        self.service = service
        self.batch_size = batch_size
        self.poll_s = poll_s
        self._wakeup = NotifyWakeup(
            pool,
            notify_channel(schema),
            self._round,
            name=f"audit-entry-publisher-{chain}",
            poll_s=poll_s,
            logger=log,
            error_message="audit.entry publisher error, retrying",
        )
        self.published_total = 0

    async def start(self) -> None:
        await self._wakeup.start()

    async def stop(self) -> None:
        await self._wakeup.stop()

    def wake(self) -> None:
        """Look at the log now (after a rewind, or when a caller knows entries were committed)."""
        self._wakeup.wake()

    async def rewind(self, retention_s: float) -> int:
        """:func:`rewind`, then wake up; counts the entries in :data:`REPUBLISHED`."""
        count = await rewind(self.pool, retention_s)
        REPUBLISHED.labels(self.service).inc(count)
        self.wake()
        return count

    async def _round(self) -> bool:
        """One batch; True when it was full (more entries are waiting)."""
        return await self.publish_batch() >= self.batch_size

    async def publish_batch(self) -> int:
        """Publish up to ``batch_size`` entries after the cursor, in seq order; advance the cursor once acked."""
        async with self.pool.acquire() as conn:
            pending = await conn.fetchval(
                "SELECT coalesce((SELECT max(seq) FROM audit_log), 0) > (SELECT last_seq FROM audit_publish_cursor)"
            )
            if not pending:  # nothing to do: no transaction, no row lock
                return 0
            async with conn.transaction():
                cursor = await conn.fetchval("SELECT last_seq FROM audit_publish_cursor FOR UPDATE SKIP LOCKED")
                if cursor is None:
                    return 0  # another replica is publishing
                rows = await conn.fetch(
                    f"SELECT {ENTRY_EVENT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                    cursor,
                    self.batch_size,
                )
                if not rows:
                    return 0
                send = self.producer.send
                futures = []
                for row in rows:
                    record = entry_record(row, self.chain)
                    futures.append(await send(record.topic, record.value, key=record.key, headers=record.headers))
                await asyncio.gather(*futures)
                await conn.execute("UPDATE audit_publish_cursor SET last_seq = $1, updated_at = now()", rows[-1]["seq"])
        self.published_total += len(rows)
        return len(rows)
