"""A started-once aiokafka producer with Vigil's defaults.

At-least-once by design: Tansu has no idempotent producer or transactions, so ``enable_idempotence`` is a setting
that only Apache Kafka deployments switch on; duplicates are absorbed by consumers' inboxes either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from vigil.bus.metrics import EVENTS_PRODUCED
from vigil.bus.topics import TopicNamer


class BusProducer:
    """Publishes raw records (bytes) to physical topics; owns one AIOKafkaProducer."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        service: str,
        namer: TopicNamer,
        enable_idempotence: bool = False,
        linger_ms: int = 5,
        request_timeout_ms: int = 30_000,
    ) -> None:
        self.service = service
        self.namer = namer
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            enable_idempotence=enable_idempotence,
            linger_ms=linger_ms,
            request_timeout_ms=request_timeout_ms,
            max_request_size=2 * 1024 * 1024,
            client_id=f"vigil-{service}",
        )
        self._started = False
        # The counter child per topic, looked up once: ``labels()`` takes a lock and builds a key on every call.
        self._produced: dict[str, Any] = {}

    async def start(self) -> None:
        await self._producer.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()

    async def send(
        self, topic: str, value: bytes, *, key: str | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one record for the logical ``topic``; returns the delivery future (await it for the ack)."""
        physical = self.namer.physical(topic)
        future: asyncio.Future[RecordMetadata] = await self._producer.send(
            physical, value, key=key.encode() if key is not None else None, headers=list(headers)
        )
        counter = self._produced.get(topic)
        if counter is None:
            counter = self._produced[topic] = EVENTS_PRODUCED.labels(self.service, topic)
        counter.inc()
        return future

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
        await self._producer.flush()
