"""A started-once aiokafka producer with Vigil's defaults, which signs every record it sends.

At-least-once by design: Tansu has no idempotent producer or transactions, so ``enable_idempotence`` is a setting
that only Apache Kafka deployments switch on; duplicates are absorbed by consumers' inboxes either way.

Signing (docs/security.md): records handed to :meth:`BusProducer.send` are held until the running coroutine yields
(or :data:`vigil.events.signing.MAX_BATCH` are waiting), then signed as one batch — one Ed25519 signature under a
Merkle root, each record with its inclusion proof — and passed to aiokafka in the order they were sent. A record that
already carries a signature (a dead letter replayed to its topic) keeps its original producer's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.structs import RecordMetadata

from vigil.bus.client_options import PLAINTEXT, KafkaSecurity
from vigil.bus.metrics import EVENTS_PRODUCED
from vigil.bus.topics import TopicNamer
from vigil.events.signing import MAX_BATCH, SigningKey, is_signed

#: One record waiting to be signed: (physical topic, value, key, headers, the future ``send`` returned).
_Pending = tuple[str, bytes, bytes | None, list[tuple[str, bytes]], "asyncio.Future[RecordMetadata]"]


_DEFAULT_PARTITIONER = DefaultPartitioner()


class KeyHashCache:
    """aiokafka's default partitioner with the key's murmur2 remembered: the same partition for a key as every Kafka
    client computes (Java's ``(murmur2(key) & 0x7fffffff) % partitions``), without re-hashing it per record.

    Why: aiokafka's murmur2 is pure Python, a few µs per record, and Vigil's keys repeat (a deployment, a model, a
    dataset, a chain). Bounded: the memo is dropped whole at :attr:`max_keys` distinct keys.
    """

    max_keys = 65_536

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return _DEFAULT_PARTITIONER(key, all_partitions, available)
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self.max_keys:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


class BusProducer:
    """Publishes raw records (bytes) to physical topics, signed with ``signer``; owns one AIOKafkaProducer.

    ``signer=None`` sends unsigned records — consumers refuse them; only for records nobody verifies (tests of the
    refusal, the broker-epoch sentinel has its own producer path).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        service: str,
        namer: TopicNamer,
        signer: SigningKey | None,
        security: KafkaSecurity = PLAINTEXT,
        enable_idempotence: bool = False,
        linger_ms: int = 5,
        request_timeout_ms: int = 30_000,
    ) -> None:
        self.service = service
        self.namer = namer
        self.signer = signer
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            enable_idempotence=enable_idempotence,
            linger_ms=linger_ms,
            request_timeout_ms=request_timeout_ms,
            max_request_size=2 * 1024 * 1024,
            client_id=f"vigil-{service}",
            partitioner=KeyHashCache(),
            **security.client_kwargs(),
        )
        self._started = False
        # The counter child per topic, looked up once: ``labels()`` takes a lock and builds a key on every call.
        self._produced: dict[str, Any] = {}
        # Records queued per logical topic since the last hand-over, added to the counters once per hand-over: an
        # ``inc()`` per record took a lock per record (issue #20's bus overhead).
        self._queued: dict[str, int] = {}
        self._pending: list[_Pending] = []
        self._flush_lock = asyncio.Lock()
        self._flush_tasks: set[asyncio.Task[None]] = set()
        self.signatures = 0

    async def start(self) -> None:
        await self._producer.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            try:
                await self._hand_over()
            finally:
                await self._producer.stop()

    async def send(
        self, topic: str, value: bytes, *, key: str | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one record for the logical ``topic``; returns the delivery future (await it for the ack)."""
        queued = self._queued
        queued[topic] = queued.get(topic, 0) + 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RecordMetadata] = loop.create_future()
        pending = self._pending
        pending.append(
            (self.namer.physical(topic), value, key.encode() if key is not None else None, list(headers), future)
        )
        if len(pending) >= MAX_BATCH:
            await self._hand_over()
        elif len(pending) == 1:
            task = loop.create_task(self._hand_over())
            self._flush_tasks.add(task)
            task.add_done_callback(self._flush_tasks.discard)
        return future

    async def send_many(
        self, records: Sequence[tuple[str, bytes, str | None, Sequence[tuple[str, bytes]]]]
    ) -> list[asyncio.Future[RecordMetadata]]:
        """Sign and hand over ``records`` (logical topic, value, key, headers) now, in order, after anything
        :meth:`send` still holds; one delivery future per record, aiokafka's own.

        For callers that have a batch in hand (the outbox relay): no record waits for the coroutine to yield, and
        no future of ours stands between the caller and aiokafka's — :meth:`send`'s per-record future and the
        callback that settles it were ~3 µs of every relayed event (issue #20's bus overhead). A record aiokafka
        refuses gets a future holding the error, and so does every record after it (none of them is sent).
        """
        async with self._flush_lock:
            await self._hand_over_locked()
            if not records:
                return []
            queued = self._queued
            physical = self.namer.physical
            batch: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = []
            for topic, value, key, headers in records:
                queued[topic] = queued.get(topic, 0) + 1
                batch.append((physical(topic), value, key.encode() if key is not None else None, list(headers)))
            self._count_queued()
            self._sign([b[1] for b in batch], [b[3] for b in batch])
            futures: list[asyncio.Future[RecordMetadata]] = []
            send = self._producer.send
            for i, (topic_name, value, key_bytes, headers) in enumerate(batch):
                try:
                    futures.append(await send(topic_name, value, key=key_bytes, headers=headers))
                except Exception as exc:
                    loop = asyncio.get_running_loop()
                    for _ in range(len(batch) - i):
                        failed: asyncio.Future[RecordMetadata] = loop.create_future()
                        failed.set_exception(exc)
                        futures.append(failed)
                    break
            return futures

    def _sign(self, values: list[bytes], headers: list[list[tuple[str, bytes]]]) -> None:
        """Append the signing headers to each record's ``headers`` (one signature per :data:`MAX_BATCH`); records
        that already carry a signature (a replayed dead letter) keep their original producer's."""
        signer = self.signer
        if signer is None:
            return
        todo = [i for i, h in enumerate(headers) if not is_signed(h)]
        if not todo:
            return
        signed = signer.sign_values([values[i] for i in todo])
        self.signatures += (len(todo) + MAX_BATCH - 1) // MAX_BATCH
        for i, extra in zip(todo, signed, strict=True):
            headers[i].extend(extra)

    async def _hand_over(self) -> None:
        """Sign what is pending as one batch and pass it to aiokafka, in order; errors go to each record's future."""
        async with self._flush_lock:
            await self._hand_over_locked()

    async def _hand_over_locked(self) -> None:
        """:meth:`_hand_over`'s work, for a caller that holds the lock (:meth:`send_many` hands over what
        :meth:`send` holds first, so records keep the order they were given in)."""
        batch, self._pending = self._pending, []
        self._count_queued()
        if not batch:
            return
        self._sign([p[1] for p in batch], [p[3] for p in batch])
        send = self._producer.send
        for i, (physical, value, key, headers, outer) in enumerate(batch):
            try:
                inner = await send(physical, value, key=key, headers=headers)
            except Exception as exc:
                for rest in batch[i:]:
                    if not rest[4].done():
                        rest[4].set_exception(exc)
                return
            inner.add_done_callback(partial(_settle, outer))

    def _count_queued(self) -> None:
        """Add the records queued since the last hand-over to ``vigil_events_produced_total``."""
        queued, self._queued = self._queued, {}
        for topic, count in queued.items():
            counter = self._produced.get(topic)
            if counter is None:
                counter = self._produced[topic] = EVENTS_PRODUCED.labels(self.service, topic)
            counter.inc(count)

    async def send_and_wait(
        self, topic: str, value: bytes, *, key: str | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> RecordMetadata:
        """Send one record and wait for the broker's acknowledgement."""
        return await (await self.send(topic, value, key=key, headers=headers))

    async def probe(self) -> bool:
        """True if the broker answers a metadata request (readiness check)."""
        client = self._producer.client
        return bool(await client.fetch_all_metadata())

    async def flush(self) -> None:
        await self._hand_over()
        await self._producer.flush()


def _settle(outer: asyncio.Future[RecordMetadata], inner: asyncio.Future[RecordMetadata]) -> None:
    """Complete the future ``send`` returned when aiokafka's delivery future completes."""
    if outer.done():
        return
    if inner.cancelled():
        outer.cancel()
    elif (exc := inner.exception()) is not None:
        outer.set_exception(exc)
    else:
        outer.set_result(inner.result())
