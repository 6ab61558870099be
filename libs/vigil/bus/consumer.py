"""The consuming half of the bus: contract checks, inbox, bounded retries, dead letters, commits after effects.

Per record: decode and check the contract (a broken one is dead-lettered at once — retrying cannot fix it); find the
handler for its type (none: ignored); run it in a transaction that also writes the inbox row (already there: a
redelivery, skipped). A handler that raises is retried ``max_attempts`` times, then the record is dead-lettered with
the error and the attempt count and the partition moves on. Infrastructure errors (Postgres unreachable) are not the
record's fault: they are retried without limit and never dead-letter a good event. Offsets are committed only after
every record of a batch is settled, so a crash between effect and commit leads to a redelivery the inbox absorbs.

Deduplication is the inbox's job by default (``ConsumerConfig.dedupe = "inbox"``). A consumer whose effects carry
the event id under a uniqueness constraint of their own can opt out with ``dedupe = "handler"``: no inbox rows are
written or checked, every delivery is passed to the handler (a duplicate id inside one polled batch is still passed
once), and the handler must make a redelivered event a no-op itself — in the same transaction, under whatever lock
makes its check-then-write atomic. The per-record fallback (poison isolation) then relies on the handler too, so a
record applied by a batch that later committed is recognised by the handler, not by the inbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from opentelemetry import trace
from opentelemetry.context import Context

from vigil.bus.aio import cancel_and_wait, stop_quietly
from vigil.bus.client_options import PLAINTEXT, KafkaSecurity
from vigil.bus.context import BatchContext, Delivery, Emitter, HandlerContext, Rejection
from vigil.bus.dead_letters import DeadLetter, record_dead_letter
from vigil.bus.metrics import CONSUMER_LAG, DLQ_TOTAL, EVENTS_CONSUMED, HANDLER_SECONDS
from vigil.bus.topics import TopicNamer
from vigil.bus.tracing import extract_context, tracer
from vigil.events import ContractError
from vigil.events.contracts import decode_event_deferred
from vigil.events.signing import SignatureRejected, claimed_kid
from vigil.events.trust import TrustStore

log = logging.getLogger(__name__)

Handler = Callable[[HandlerContext, Any], Awaitable[None]]
BatchHandler = Callable[[BatchContext, list[Delivery]], Awaitable[None]]
#: Runs in the transaction that dead-letters a refused record (the auditor records the refusal in its log).
RejectionHandler = Callable[[asyncpg.Connection, Rejection], Awaitable[None]]

#: Errors that mean "the database is away", not "this record is bad".
INFRA_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    TimeoutError,
)


@dataclass(frozen=True)
class ConsumerConfig:
    """Knobs of one consumer; names follow Kafka's, with units."""

    service: str
    group_id: str
    topics: Sequence[str]  # logical names
    source: str  # CloudEvents source of events emitted by handlers, e.g. vigil://registry
    max_attempts: int = 3
    retry_backoff_ms: int = 200
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 300_000
    max_poll_records: int = 500
    metadata_max_age_ms: int = 5_000
    fetch_max_wait_ms: int = 500
    #: After a poll that brought fewer than half of ``max_poll_records`` records, wait this long before the next one
    #: (0: never). See :meth:`EventConsumer._linger`.
    poll_linger_ms: int = 10
    #: "inbox": the consumer claims each event id in ``inbox`` before the handler runs (exactly-once effects).
    #: "handler": no inbox; the handler is responsible for idempotency (see the module docstring).
    dedupe: Literal["inbox", "handler"] = "inbox"

    @property
    def heartbeat_interval_ms(self) -> int:
        """A third of the session timeout, at most aiokafka's default 3 s: Kafka's guidance ("typically no higher
        than 1/3 of session.timeout.ms"), so one late heartbeat is not an eviction. aiokafka's fixed 3 s was half the
        6 s session of the test stacks: one stall of the event loop over ~3 s and the member could be evicted."""
        return min(3_000, self.session_timeout_ms // 3)


class EventConsumer:
    """Consumes logical topics for one service and applies handlers exactly once per event id."""

    def __init__(
        self,
        bootstrap_servers: str,
        pool: asyncpg.Pool,
        config: ConsumerConfig,
        namer: TopicNamer,
        handlers: dict[str, Handler] | None = None,
        batch_handler: BatchHandler | None = None,
        *,
        trust: TrustStore | None,
        on_rejected: RejectionHandler | None = None,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        """``trust``: the signers whose records are applied (see :meth:`_process_records`); ``None`` turns the
        check off — for tests and benchmarks of the bus itself only, never a service (``start_runtime``)."""
        self.bootstrap_servers = bootstrap_servers
        self.trust = trust
        self.on_rejected = on_rejected
        self.security = security
        self.pool = pool
        self.config = config
        self.namer = namer
        self.handlers = dict(handlers or {})
        self.batch_handler = batch_handler
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.last_poll_monotonic = 0.0
        self.applied = 0
        self.skipped = 0
        self.dead_lettered = 0
        self.rejected = 0
        self._positions: dict[TopicPartition, int] = {}
        self._caught_up_ms: dict[tuple[str, int], int] = {}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.config.group_id}")

    async def stop(self) -> None:
        self._stopping = True  # the loop ends at its next turn even if a library swallows the cancel (aio.py)
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    def caught_up_ms(self) -> dict[tuple[str, int], int]:
        """(logical topic, partition) → the wall-clock time (epoch ms) of the newest fetch after which this consumer had
        handled every record of the partition: everything appended before then has been applied and committed.
        Only partitions assigned to this member since it started; a window closer reads it as a watermark."""
        return dict(self._caught_up_ms)

    def partition_counts(self) -> dict[str, int]:
        """Partitions per consumed logical topic, from the client's metadata (empty before it has any)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out: dict[str, int] = {}
        for logical in self.config.topics:
            found = consumer.partitions_for_topic(self.namer.physical(logical))
            if found:
                out[logical] = len(found)
        return out

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *[self.namer.physical(t) for t in self.config.topics],
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.config.group_id,
            client_id=f"{self.config.group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            max_poll_interval_ms=self.config.max_poll_interval_ms,
            max_poll_records=self.config.max_poll_records,
            metadata_max_age_ms=self.config.metadata_max_age_ms,
            fetch_max_wait_ms=self.config.fetch_max_wait_ms,
            **self.security.client_kwargs(),
        )

    async def _run(self) -> None:
        """Poll forever. Any unexpected error restarts the Kafka consumer after a pause — it never dies silently."""
        while not self._stopping:
            consumer = self._new_consumer()
            self._consumer = consumer
            try:
                await consumer.start()
                while True:
                    polled = await consumer.getmany(timeout_ms=500)
                    self.last_poll_monotonic = time.monotonic()
                    if polled:
                        await self._process_poll(consumer, polled)
                    self._report_lag(consumer)
                    await self._note_caught_up(consumer)
                    if polled:
                        await self._linger(polled)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("consumer loop failed; restarting", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)
            finally:
                self._consumer = None
                await stop_quietly(consumer)

    async def _linger(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Wait ``poll_linger_ms`` after a small poll, so the records arriving meanwhile make one batch, not several.

        Why: every poll costs the same fixed work whatever its size — a transaction (BEGIN, inbox claim, the handler's
        writes, COMMIT), an offset commit, a span, metrics, and the broker's fetches. A consumer that keeps up with a
        steady stream polls as soon as a few records have arrived and pays that work for every few records: with the
        producer on the same event loop, 120–270 polls per 20,000 events instead of 40, and that fixed work was a
        large part of the bus's end-to-end cost over a hand-written aiokafka loop (issue #20,
        docs/benchmarks/loop.md). This is the consuming twin of the producer's ``linger_ms``: a record arriving just
        after a small poll waits at most this long more; an idle consumer (empty polls) and one that is behind
        (full polls) never wait. Kafka's own answer, ``fetch.min.bytes``, is a broker-side wait the embedded broker
        does not honour.
        """
        if self.config.poll_linger_ms <= 0:
            return
        count = sum(len(records) for records in polled.values())
        if count * 2 < self.config.max_poll_records:
            await asyncio.sleep(self.config.poll_linger_ms / 1000)

    async def _process_poll(
        self, consumer: AIOKafkaConsumer, polled: dict[TopicPartition, list[ConsumerRecord]]
    ) -> None:
        """Settle one poll's records, a topic at a time, then commit every partition's offset at once.

        The records of one topic's partitions are one batch (partition order kept inside it): a batch handler gets
        them in one transaction, and the whole poll costs one offset commit. Per partition, as aiokafka's own
        ``getmany`` example does, a poll spread over four partitions cost four transactions and four commit round
        trips — per-batch work that made small batches dear (issue #20's bus overhead). Offsets are committed only
        after every record of the poll is settled, so a crash in between is a redelivery the inbox absorbs.
        """
        by_topic: dict[str, list[ConsumerRecord]] = {}
        offsets: dict[TopicPartition, int] = {}
        for tp, records in polled.items():
            if records:
                by_topic.setdefault(tp.topic, []).extend(records)
                offsets[tp] = records[-1].offset + 1
        for physical, records in by_topic.items():
            await self._process_records(physical, records)
        if offsets:
            await self._commit(consumer, offsets)
            self._positions.update(offsets)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:  # rebalanced or broker gone: redelivery is harmless
            log.warning("offset commit failed", extra={"error": repr(exc), "partitions": sorted(map(str, offsets))})

    def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            position = self._positions.get(tp)
            if high is None or position is None:
                continue
            CONSUMER_LAG.labels(self.config.service, self.namer.logical(tp.topic), str(tp.partition)).set(
                max(0, high - position)
            )

    async def _note_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        """Record, per assigned partition, the time of the last fetch whose highwater the position has reached."""
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            fetched_at = consumer.last_poll_timestamp(tp)
            if high is None or fetched_at is None:
                continue
            position = self._positions.get(tp)
            if position is None or position < high:
                # Only when what this member applied does not already reach the highwater: ``wait_for`` makes a
                # task and a timer per partition, every poll (issue #20's bus overhead). A position of our own at
                # or past the highwater is enough: every record below it was applied here.
                try:  # no wait: a position being reset (rebalance) is simply not caught up this turn
                    position = await asyncio.wait_for(consumer.position(tp), 0.05)
                except (TimeoutError, KafkaError):
                    continue
            if position >= high:
                key = (self.namer.logical(tp.topic), tp.partition)
                self._caught_up_ms[key] = max(self._caught_up_ms.get(key, 0), int(fetched_at))

    # ------------------------------------------------------------------ processing
    async def _process_records(self, physical_topic: str, records: list[ConsumerRecord]) -> None:
        """Per record: signature (against the trust store), contract, then may the signer produce this type.

        A record failing the first or the last check is refused (:meth:`_reject`): dead-lettered with the reason,
        shown to ``on_rejected``, never applied. ``records``: one topic's, each partition's in order.
        """
        topic = self.namer.logical(physical_topic)
        trust = self.trust
        if trust is not None:
            trust.refresh()  # keys issued or revoked since the last look apply without a restart (rate-limited)
        kept: list[ConsumerRecord] = []
        deliveries: list[Delivery] = []
        for record in records:
            signer = None
            if trust is not None:
                try:
                    signer = trust.verify(record.value, record.headers)
                except SignatureRejected as exc:
                    await self._reject(record, topic, exc, kid=_kid_of(record))
                    continue
            try:
                envelope, payload_cls, payload = decode_event_deferred(record.value)
            except ContractError as exc:
                await self._dead_letter(record, topic, exc.reason, exc.detail, attempts=1, event_id=None)
                continue
            if signer is not None and envelope.type not in signer.events:  # what TrustStore.authorise refuses
                try:
                    TrustStore.authorise(signer, envelope.type)
                except SignatureRejected as exc:
                    await self._reject(record, topic, exc, kid=signer.kid, principal=signer.principal)
                    continue
            delivery = (
                Delivery(envelope, payload, topic, record.partition, record.offset)
                if payload is not None
                else Delivery.deferred(envelope, payload_cls, topic, record.partition, record.offset)
            )
            if signer is not None:
                delivery.signer = signer.principal
            kept.append(record)
            deliveries.append(delivery)
        if not deliveries:
            return
        # A batch handler gets the batch in one transaction; if that fails as a whole, isolate the poison by
        # applying the records one by one.
        batchable = self.batch_handler is not None and len(deliveries) > 1
        contexts = [extract_context(record.headers) for record in kept] if batchable else []
        if batchable and await self._apply_batch(deliveries, contexts):
            return
        for record, delivery in zip(kept, deliveries, strict=True):
            await self._apply_one(record, delivery)

    async def _apply_batch(self, deliveries: list[Delivery], contexts: list[Context]) -> bool:
        """One transaction for the whole batch (inbox or handler filters redeliveries). False if the handler raised."""
        assert self.batch_handler is not None
        while True:
            try:
                start = time.perf_counter()
                # One span for the batch, linked to every event's own trace (OTel messaging convention for
                # batch processing): each upstream trace shows where its event went without a span per row.
                with tracer.start_as_current_span(
                    f"process batch {deliveries[0].topic}",
                    kind=trace.SpanKind.CONSUMER,
                    links=batch_links(contexts),
                    attributes={
                        "messaging.batch.message_count": len(deliveries),
                        "messaging.consumer.group.name": self.config.group_id,
                    },
                ):
                    emitter: Emitter | None = None
                    async with self.pool.acquire() as conn, conn.transaction():
                        fresh = await self._claim(conn, deliveries)
                        if fresh:
                            emitter = Emitter(conn, self.config.source, f"service:{self.config.service}")
                            await self.batch_handler(BatchContext(conn, emitter), fresh)
                    if emitter is not None:
                        emitter.committed()
                HANDLER_SECONDS.labels(self.config.service, "*batch*").observe(time.perf_counter() - start)
                self.applied += len(fresh)
                self.skipped += len(deliveries) - len(fresh)
                # One ``labels().inc(n)`` per (topic, type, outcome) of the batch, not one per event: the label
                # lookup (a lock and a dict) cost more than the rest of the bookkeeping at 500 events a batch.
                if len(fresh) == len(deliveries):  # the usual batch: every event applied
                    outcomes = Counter((d.topic, d.envelope.type, "applied") for d in deliveries)
                else:
                    fresh_ids = {d.envelope.id for d in fresh}
                    outcomes = Counter(
                        (d.topic, d.envelope.type, "applied" if d.envelope.id in fresh_ids else "duplicate")
                        for d in deliveries
                    )
                for (topic, event_type, outcome), count in outcomes.items():
                    EVENTS_CONSUMED.labels(self.config.service, topic, event_type, outcome).inc(count)
                return True
            except INFRA_ERRORS as exc:
                log.warning("database unavailable; retrying batch", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("batch handler failed; falling back to one record at a time")
                return False

    async def _claim(self, conn: asyncpg.Connection, deliveries: list[Delivery]) -> list[Delivery]:
        """The deliveries to apply: not yet in the inbox, or (``dedupe="handler"``) all, each id once."""
        if self.config.dedupe == "handler":
            return _first_of_each_id(deliveries)
        return await claim_inbox(conn, deliveries)

    async def _apply_one(self, record: ConsumerRecord, delivery: Delivery) -> None:
        envelope = delivery.envelope
        handler = self.handlers.get(envelope.type)
        if handler is None and self.batch_handler is None:
            EVENTS_CONSUMED.labels(self.config.service, delivery.topic, envelope.type, "ignored").inc()
            return
        attempts = 0
        last_error: BaseException | None = None
        ctx_otel = extract_context(record.headers)
        while attempts < self.config.max_attempts:
            attempts += 1
            start = time.perf_counter()
            try:
                with tracer.start_as_current_span(
                    f"process {envelope.type}",
                    context=ctx_otel,
                    kind=trace.SpanKind.CONSUMER,
                    attributes={
                        "messaging.destination.name": delivery.topic,
                        "messaging.consumer.group.name": self.config.group_id,
                        "vigil.event_id": envelope.id,
                    },
                ):
                    applied = await self._apply_in_transaction(delivery, handler)
                HANDLER_SECONDS.labels(self.config.service, envelope.type).observe(time.perf_counter() - start)
                outcome = "applied" if applied else "duplicate"
                if applied:
                    self.applied += 1
                else:
                    self.skipped += 1
                EVENTS_CONSUMED.labels(self.config.service, delivery.topic, envelope.type, outcome).inc()
                return
            except INFRA_ERRORS as exc:
                attempts -= 1  # not the record's fault: do not spend an attempt
                log.warning("database unavailable; retrying", extra={"error": repr(exc), "event_id": envelope.id})
                await asyncio.sleep(1.0)
            except Exception as exc:
                last_error = exc
                log.warning(
                    "handler failed",
                    extra={"event_id": envelope.id, "type": envelope.type, "attempt": attempts, "error": repr(exc)},
                )
                if attempts < self.config.max_attempts:
                    await asyncio.sleep(self.config.retry_backoff_ms / 1000 * 2 ** (attempts - 1))
        await self._dead_letter(
            record,
            delivery.topic,
            "handler_failed",
            repr(last_error),
            attempts=attempts,
            event_id=envelope.id,
            event_type=envelope.type,
        )

    async def _apply_in_transaction(self, delivery: Delivery, handler: Handler | None) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = await self._claim(conn, [delivery])
            if not fresh:
                return False
            emitter = Emitter(conn, self.config.source, f"service:{self.config.service}")
            if handler is not None:
                await handler(HandlerContext(conn, delivery, emitter), delivery.payload)
            else:
                assert self.batch_handler is not None
                await self.batch_handler(BatchContext(conn, emitter), [delivery])
        emitter.committed()
        return True

    async def _dead_letter(
        self,
        record: ConsumerRecord,
        topic: str,
        reason: str,
        error: str,
        *,
        attempts: int,
        event_id: str | None,
        event_type: str | None = None,
        rejection: Rejection | None = None,
    ) -> None:
        letter = DeadLetter.from_record(
            record,
            topic=topic,
            group=self.config.group_id,
            reason=reason,
            error=error,
            attempts=attempts,
            event_id=event_id,
            event_type=event_type,
        )
        while True:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    fresh = await record_dead_letter(conn, letter)
                    if fresh and rejection is not None and self.on_rejected is not None:
                        await self.on_rejected(conn, rejection)
                break
            except INFRA_ERRORS as exc:
                log.warning("database unavailable; retrying dead letter", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)
        self.dead_lettered += 1
        DLQ_TOTAL.labels(self.config.service, topic, reason).inc()
        EVENTS_CONSUMED.labels(self.config.service, topic, event_type or "?", "dead_lettered").inc()
        log.error("dead-lettered record", extra={"topic": topic, "reason": reason, "error": error[:500]})

    async def _reject(
        self,
        record: ConsumerRecord,
        topic: str,
        refusal: SignatureRejected,
        *,
        kid: str | None,
        principal: str | None = None,
    ) -> None:
        """Dead-letter a record whose signer is not trusted for it; identity is its bytes' digest, never its claimed
        id (a forger must not be able to take the id of a real event)."""
        self.rejected += 1
        rejection = Rejection(
            topic, record.partition, record.offset, refusal.reason, refusal.detail, record.value, kid, principal
        )
        await self._dead_letter(
            record, topic, refusal.reason, refusal.detail, attempts=1, event_id=None, rejection=rejection
        )


def _kid_of(record: ConsumerRecord) -> str | None:
    """The key id a refused record claims, for the record of the refusal (bounded, printable)."""
    return claimed_kid(record.headers)


#: Claims a batch's ids in one statement. The rows travel as one JSON parameter, not as five arrays: asyncpg checks
#: every element of an array parameter against collections.abc in Python (eight checks per event here), which cost
#: more than the rest of the claim (issue #20's bus overhead: 3.6 → 1.1 µs of client CPU per event, same round
#: trip). ``array_agg`` returns the claimed ids as one value instead of a row each.
_CLAIM_INBOX = (
    "WITH claimed AS ("
    'INSERT INTO inbox (event_id, event_type, topic, partition, "offset") '
    'SELECT * FROM json_to_recordset($1::json) AS r(id text, type text, topic text, partition int, "offset" bigint) '
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
    ") SELECT array_agg(event_id) FROM claimed"
)


async def claim_inbox(conn: asyncpg.Connection, deliveries: list[Delivery]) -> list[Delivery]:
    """Insert inbox rows; return the deliveries that were not there yet (the ones to apply).

    Also for handlers of a ``dedupe="handler"`` consumer that keep the inbox for part of what they receive.
    """
    rows = [
        {"id": d.envelope.id, "type": d.envelope.type, "topic": d.topic, "partition": d.partition, "offset": d.offset}
        for d in deliveries
    ]
    claimed = await conn.fetchval(_CLAIM_INBOX, orjson.dumps(rows).decode()) or ()
    if len(claimed) == len(deliveries):  # the usual batch: every id new and each once (a repeat is claimed once)
        return list(deliveries)
    fresh_ids = set(claimed)
    seen: set[str] = set()
    fresh: list[Delivery] = []
    for d in deliveries:  # the same id twice in one batch: apply it once
        if d.envelope.id in fresh_ids and d.envelope.id not in seen:
            seen.add(d.envelope.id)
            fresh.append(d)
    return fresh


#: Links per batch span: the SDK's default span link limit (``OTEL_SPAN_LINK_COUNT_LIMIT``); it drops the rest.
MAX_BATCH_LINKS = 128


def batch_links(contexts: list[Context]) -> list[trace.Link]:
    """One link per distinct upstream span of a batch, in first-seen order, at most :data:`MAX_BATCH_LINKS`.

    The records of one producer span share its context: linking it once per record made 500 identical links for
    the SDK to drop (all past the limit) and cost a few percent of the consumer's CPU (issue #9).
    """
    seen: set[tuple[int, int]] = set()
    links = []
    for ctx in contexts:
        span_context = trace.get_current_span(ctx).get_span_context()
        key = (span_context.trace_id, span_context.span_id)
        if span_context.is_valid and key not in seen:
            seen.add(key)
            links.append(trace.Link(span_context))
            if len(links) == MAX_BATCH_LINKS:
                break
    return links


def _first_of_each_id(deliveries: list[Delivery]) -> list[Delivery]:
    """The deliveries with a duplicate id inside the list removed (the first one is kept)."""
    seen: set[str] = set()
    out: list[Delivery] = []
    for d in deliveries:
        if d.envelope.id not in seen:
            seen.add(d.envelope.id)
            out.append(d)
    return out
