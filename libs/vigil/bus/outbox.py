"""Transactional outbox: events are written with the state change that caused them, then relayed to Kafka.

``enqueue`` runs inside the caller's transaction (so an event exists if and only if its effect does) and notifies
the relay (LISTEN/NOTIFY through :class:`vigil.bus.wakeup.NotifyWakeup`, polling as a fallback), which publishes
rows in ``seq`` order, waits for the broker's acks and marks them published. Published rows are kept for
``retention`` so that :meth:`OutboxRelay.republish_recent` can replay them after a broker lost its log; consumers'
inboxes make the replay harmless.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Sequence
from typing import NamedTuple

import asyncpg
import orjson

from vigil.bus.metrics import DEAD_LETTERS_EXPIRED, OUTBOX_PENDING, REPUBLISHED
from vigil.bus.producer import BusProducer
from vigil.bus.tracing import inject_headers
from vigil.bus.wakeup import NotifyWakeup
from vigil.events import Envelope, payload_class
from vigil.events.contracts import encode_outgoing

log = logging.getLogger(__name__)
#: How long a relay whose last round failed waits for the broker's metadata before it competes for the lock again.
_BROKER_PROBE_S = 3.0


def encode_headers(headers: list[tuple[str, bytes]]) -> str:
    """Kafka headers as JSON text for a JSONB column (values base64: bytes may hold NUL, which JSONB refuses)."""
    return orjson.dumps([[k, base64.b64encode(v).decode()] for k, v in headers]).decode()


def decode_headers(stored: str | bytes | list[list[str]]) -> list[tuple[str, bytes]]:
    """Inverse of :func:`encode_headers` (accepts the JSON text or the list the pool's JSONB codec made of it)."""
    items = orjson.loads(stored) if isinstance(stored, str | bytes) else stored
    return [(k, base64.b64decode(v)) for k, v in items]


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel that wakes a schema's relay."""
    return f"vigil_outbox_{schema}"


async def _notify_relay(conn: asyncpg.Connection) -> None:
    """Wake this schema's relay when the transaction commits (one round trip; the schema is the connection's)."""
    await conn.execute("SELECT pg_notify('vigil_outbox_' || current_schema(), '')")


async def enqueue(conn: asyncpg.Connection, envelope: Envelope, *, validate: bool = True) -> None:
    """Add an event to the outbox in the caller's transaction; the topic and key come from its payload class."""
    record = OutboxRecord.of(envelope, validate=validate)
    await enqueue_raw(conn, record.record_id, record.topic, record.key, record.value, record.headers)


async def enqueue_raw(
    conn: asyncpg.Connection,
    record_id: str,
    topic: str,
    key: str | None,
    value: bytes,
    headers: list[tuple[str, bytes]],
) -> None:
    """Add a raw record (e.g. a dead letter) to the outbox. Idempotent per ``record_id``."""
    await conn.execute(
        "INSERT INTO outbox (event_id, topic, key, value, headers) VALUES ($1, $2, $3, $4, $5::jsonb) "
        "ON CONFLICT (event_id) DO NOTHING",
        record_id,
        topic,
        key,
        value,
        encode_headers(headers),
    )
    await _notify_relay(conn)


class OutboxRecord(NamedTuple):
    """One row for :func:`enqueue_many`: a record ready for the broker.

    A named tuple rather than a frozen dataclass: one is made per produced event, and the dataclass's frozen
    ``__init__`` (an ``object.__setattr__`` per field) cost more than the tuple (issue #20's bus overhead).
    """

    record_id: str
    topic: str
    key: str | None
    value: bytes
    headers: list[tuple[str, bytes]]

    @classmethod
    def of(cls, envelope: Envelope, *, validate: bool = True) -> OutboxRecord:
        """The outbox row of an event (topic and key from its payload class), as :func:`enqueue` would write it.

        With ``validate`` the contract check and the encoding share one dump of the envelope
        (:func:`vigil.events.contracts.encode_outgoing`): the bytes written are the bytes checked.
        """
        value = encode_outgoing(envelope) if validate else envelope.canonical_bytes()
        payload_cls = payload_class(envelope.type, envelope.version)
        key = str(envelope.data.get(payload_cls.KEY_FIELD, envelope.subject))
        # Trace context only: the type and id are the envelope's, one parse away. The ``ce_type``/``ce_id`` copies
        # records once carried were 60 bytes of every record through the producer, broker and consumer — 2–4 µs
        # of the bus's end-to-end cost per event on the embedded broker, by the padding measurement in
        # vigil.events.signing (issue #20's bus overhead) — and nothing read them.
        return cls(envelope.id, payload_cls.TOPIC, key, value, inject_headers())


async def enqueue_many(conn: asyncpg.Connection, records: Sequence[OutboxRecord]) -> None:
    """Add many records to the outbox in the caller's transaction: one multi-row insert and one notify.

    Keeps :func:`enqueue_raw`'s semantics (idempotent per ``record_id``, relayed in the order given) for
    high-volume writers such as the auditor, which emits one ``audit.entry`` per audited event.
    """
    if not records:
        return
    await conn.execute(
        "INSERT INTO outbox (event_id, topic, key, value, headers) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[]::jsonb[]) "
        "ON CONFLICT (event_id) DO NOTHING",
        [r.record_id for r in records],
        [r.topic for r in records],
        [r.key for r in records],
        [r.value for r in records],
        [encode_headers(r.headers) for r in records],
    )
    await _notify_relay(conn)


def _relay_lock_key(schema: str) -> int:
    """A stable 64-bit advisory lock key per schema's relay."""
    return int.from_bytes(hashlib.sha256(f"vigil-relay-{schema}".encode()).digest()[:8], "big", signed=True)


class OutboxRelay:
    """Publishes a schema's outbox. Several replicas may run: rows are claimed with FOR UPDATE SKIP LOCKED."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: BusProducer,
        *,
        schema: str,
        service: str,
        batch_size: int = 500,
        poll_interval_ms: int = 200,
        retention_s: float = 86_400.0,
        dead_letter_retention_s: float | None = 30 * 86_400.0,
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.schema = schema
        self.service = service
        self.batch_size = batch_size
        self.poll_interval = poll_interval_ms / 1000
        self.retention_s = retention_s
        self.dead_letter_retention_s = dead_letter_retention_s
        self._last_prune = 0.0
        # The wait without a NOTIFY is 5 poll intervals: the NOTIFY is the fast path, the poll only a safety net.
        self._wakeup = NotifyWakeup(
            pool,
            notify_channel(schema),
            self._round,
            name=f"outbox-relay-{schema}",
            poll_s=self.poll_interval * 5,
            backoff_s=self.poll_interval,
            logger=log,
            error_message="outbox relay error, retrying",
            log_extra={"schema": schema},
        )
        self.published_total = 0
        self._broker_suspect = False  # the last round failed to publish: probe the broker before taking the lock

    async def start(self) -> None:
        await self._wakeup.start()

    async def stop(self) -> None:
        await self._wakeup.stop()

    def wake(self) -> None:
        """Ask the relay to look at the outbox now."""
        self._wakeup.wake()

    async def _round(self) -> bool:
        """Publish one batch (and prune once a minute); True when a full batch suggests more is waiting."""
        published = await self.publish_batch()
        now = asyncio.get_running_loop().time()
        if now - self._last_prune > 60:
            self._last_prune = now
            await self.prune()
            await self.expire_dead_letters()
        return published >= self.batch_size

    async def publish_batch(self) -> int:
        """Publish up to ``batch_size`` pending rows in seq order; mark each published once acked.

        One relay per schema publishes at a time (a transaction-scoped advisory lock): with several replicas,
        two relays taking consecutive slices at once could put one aggregate's events on Kafka out of order.

        A failed send does not roll back the rows the broker acknowledged: every send of the batch is waited for,
        the acknowledged rows are marked, and only the others stay pending (then the error is raised, so the
        wake-up loop backs off). Rolling back at the first failure while the rest of the batch was still in
        flight put those rows on the bus a second time at the next round (issue #24's partition test saw up to 82
        copies). After a failure the relay asks the broker for metadata before it takes the lock again, so a
        replica cut off from the broker leaves the outbox to one that can reach it instead of holding the lock
        for a request timeout each round.
        """
        if self._broker_suspect and not await self._broker_answers():
            return 0
        failure: BaseException | None = None
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _relay_lock_key(self.schema)):
                return 0  # another replica is publishing this outbox right now
            rows = await conn.fetch(
                "SELECT seq, topic, key, value, headers FROM outbox WHERE published_at IS NULL "
                "ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
                self.batch_size,
            )
            acked: list[int] = []
            if rows:
                outcomes = await self._send_all(rows)
                acked = [row["seq"] for row, error in zip(rows, outcomes, strict=True) if error is None]
                failure = next((error for error in outcomes if error is not None), None)
                if acked:
                    await conn.execute(
                        "UPDATE outbox SET published_at = now(), publish_count = publish_count + 1 WHERE seq = ANY($1)",
                        acked,
                    )
                self.published_total += len(acked)
            pending = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            OUTBOX_PENDING.labels(self.service).set(pending)
        self._broker_suspect = failure is not None
        if failure is not None:
            raise failure
        return len(acked)

    async def _send_all(self, rows: Sequence[asyncpg.Record]) -> list[BaseException | None]:
        """Hand every row to the producer at once (one signed batch), wait for every delivery; per row, None
        (acknowledged) or its error.

        A row the producer would not even take (it raised) ends the handing over: it and the rows after it carry
        that error and are not sent, so a later round sends them in order."""
        futures = await self.producer.send_many(
            [(row["topic"], bytes(row["value"]), row["key"], decode_headers(row["headers"])) for row in rows]
        )
        results = await asyncio.gather(*futures, return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    async def _broker_answers(self) -> bool:
        """Whether the broker answers a metadata request within a few seconds (cancelling one has no effect)."""
        try:
            return await asyncio.wait_for(self.producer.probe(), _BROKER_PROBE_S)
        except Exception:
            return False

    async def republish_recent(self) -> int:
        """Mark every retained row unpublished again (the broker lost them); the relay republishes in order."""
        async with self.pool.acquire() as conn:
            result = await conn.execute(
                "UPDATE outbox SET published_at = NULL WHERE published_at IS NOT NULL "
                "AND published_at > now() - make_interval(secs => $1)",
                self.retention_s,
            )
        count = int(result.split()[-1])
        REPUBLISHED.labels(self.service).inc(count)
        self.wake()
        return count

    async def expire_dead_letters(self) -> int:
        """Delete this schema's dead letters older than their retention period (None: kept forever).

        Why here: the relay's minute housekeeping already runs once per schema, on the schema's bus tables. Dead
        letters keep the raw record — for a prediction, the features of a patient — so they must not outlive their
        use: long enough to inspect and replay, not forever. The copy on ``vigil.dlq`` expires with the topic's
        ``retention.ms`` (:data:`vigil.bus.topics.TOPIC_CONFIGS`)."""
        if self.dead_letter_retention_s is None:
            return 0
        async with self.pool.acquire() as conn:
            result = await conn.execute(
                "DELETE FROM dead_letters WHERE updated_at < now() - make_interval(secs => $1)",
                self.dead_letter_retention_s,
            )
        expired = int(result.split()[-1])
        if expired:
            DEAD_LETTERS_EXPIRED.labels(self.service).inc(expired)
            log.info("expired dead letters", extra={"schema": self.schema, "rows": expired})
        return expired

    async def prune(self) -> int:
        """Delete rows published longer ago than the retention period."""
        async with self.pool.acquire() as conn:
            result = await conn.execute(
                "DELETE FROM outbox WHERE published_at IS NOT NULL "
                "AND published_at < now() - make_interval(secs => $1)",
                self.retention_s,
            )
        return int(result.split()[-1])
