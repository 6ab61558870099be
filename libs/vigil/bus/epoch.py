"""Detects a broker that lost its log (the embedded broker keeps everything in memory).

Kafka offers no cheap "this is not the log you wrote to" signal that Tansu supports (no topic ids in metadata), so
each service writes a random sentinel record to ``vigil._epoch`` and periodically reads the record back at the
offset the broker acknowledged. If it is missing or different, the log was lost: topics are created again and the
outbox republishes what it retains. A broker that is merely unreachable is not a loss; we wait.

The reading consumer lives as long as the watch, its one partition paused between checks, so a check is two small
requests on open connections, and its metadata (for that one topic) is refreshed once per interval. It used to be a
new consumer per check: two connections, their handshakes (a TLS and SCRAM exchange each on a secured bus) and a
metadata request for every topic of the cluster, every second per service (docs/architecture.md, "Idle cost").
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from vigil.bus.aio import cancel_and_wait, stop_quietly
from vigil.bus.client_options import PLAINTEXT, KafkaSecurity
from vigil.bus.metrics import BROKER_LOSSES
from vigil.bus.producer import BusProducer
from vigil.bus.topics import EPOCH_TOPIC

log = logging.getLogger(__name__)


class BrokerEpochWatch:
    """Calls ``on_loss`` once per detected loss of the broker's log."""

    def __init__(
        self,
        bootstrap_servers: str,
        producer: BusProducer,
        on_loss: Callable[[], Awaitable[None]],
        *,
        service: str,
        interval_s: float = 1.0,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.security = security
        self.producer = producer
        self.on_loss = on_loss
        self.service = service
        self.interval_s = interval_s
        self._nonce = b""
        self._offset = -1
        self._partition = 0
        self._task: asyncio.Task[None] | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._stopping = False
        self.losses = 0

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="broker-epoch-watch")

    async def stop(self) -> None:
        self._stopping = True  # the loop ends at its next turn even if a library swallows the cancel (aio.py)
        if self._task is not None:
            await cancel_and_wait(self._task)
        await self._drop_reader()

    async def _plant(self) -> None:
        self._nonce = f"{self.service}:{secrets.token_hex(16)}".encode()
        meta = await self.producer.send_and_wait(EPOCH_TOPIC, self._nonce, key=self.service)
        self._partition, self._offset = meta.partition, meta.offset

    async def _started_reader(self) -> AIOKafkaConsumer:
        """The watch's reading consumer: no group, no commits, started on first use and kept."""
        if self._reader is None:
            reader = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                enable_auto_commit=False,
                request_timeout_ms=5_000,
                # Its view of the cluster is refreshed once per check interval, in the background, and only for the
                # topic it is assigned (a request for every topic of a shared cluster each second would be waste).
                metadata_max_age_ms=max(100, int(self.interval_s * 1000)),
                **self.security.client_kwargs(),
            )
            try:
                await reader.start()
            except BaseException:
                await stop_quietly(reader)
                raise
            self._reader = reader
        return self._reader

    async def _drop_reader(self) -> None:
        """Stop the reading consumer; the next check starts a fresh one (after a failure nothing in it is trusted)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            await stop_quietly(reader)

    async def _sentinel_present(self) -> bool | None:
        """True if our sentinel is still in the log, False if not, None if the broker can't be asked."""
        tp = TopicPartition(self.producer.namer.physical(EPOCH_TOPIC), self._partition)
        try:
            reader = await self._started_reader()
            if reader.assignment() != {tp}:
                reader.assign([tp])
            if not reader.partitions_for_topic(tp.topic):  # at most one interval old (see _started_reader)
                return False  # the topic itself is gone
            end = (await reader.end_offsets([tp]))[tp]
            if end <= self._offset:
                return False
            reader.seek(tp, self._offset)  # also drops whatever the last check fetched beyond it
            reader.resume(tp)
            try:
                batch = await reader.getmany(tp, timeout_ms=2_000, max_records=1)
            finally:
                reader.pause(tp)  # no fetching between checks
            records = batch.get(tp, [])
            if not records:
                return None  # could not read it in time; do not guess
            return records[0].offset == self._offset and records[0].value == self._nonce
        except Exception as exc:
            log.debug("epoch check failed", extra={"error": repr(exc)})
            await self._drop_reader()
            return None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                if self._offset < 0:
                    await self._plant()
                present = await self._sentinel_present()
                if present is False:
                    self.losses += 1
                    BROKER_LOSSES.labels(self.service).inc()
                    log.warning("broker lost its log; recreating topics and republishing the outbox")
                    await self._drop_reader()  # its view of the lost log is of no use
                    await self.on_loss()
                    await self._plant()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("epoch watch error: %r", exc, exc_info=True)
            await asyncio.sleep(self.interval_s)
