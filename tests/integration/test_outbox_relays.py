"""Several replicas of a service run several relays over one outbox: each row is published, in seq order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import NodeNotReadyError

from support.kafka import read_all
from support.services import eventually
from support.signing import TEST_PRODUCER, signing_key
from vigil.bus.outbox import OutboxRelay, enqueue_raw
from vigil.bus.producer import BusProducer
from vigil.bus.topics import TopicNamer, ensure_topics
from vigil.service.db import BUS_MIGRATIONS, create_pool, migrate

pytestmark = pytest.mark.integration

ROWS = 1200


async def test_two_relays_keep_one_outbox_in_order(kafka_bootstrap: str, fresh_db: str, topic_prefix: str) -> None:
    namer = TopicNamer(topic_prefix)
    await ensure_topics(kafka_bootstrap, namer.all_physical(), 1, 1)
    pool = await create_pool(fresh_db, "relaytest")
    producers = [
        BusProducer(kafka_bootstrap, service="relaytest", namer=namer, signer=signing_key(TEST_PRODUCER))
        for _ in range(2)
    ]
    relays = [
        OutboxRelay(pool, p, schema="relaytest", service="relaytest", batch_size=100, poll_interval_ms=20)
        for p in producers
    ]
    try:
        await migrate(pool, "relaytest", [("bus", BUS_MIGRATIONS)])
        async with pool.acquire() as conn, conn.transaction():
            for i in range(ROWS):
                await enqueue_raw(conn, f"row-{i}", "vigil.data", "one-key", str(i).encode(), [])
        for p in producers:
            await p.start()
        await asyncio.gather(*(r.start() for r in relays))

        async def drained() -> bool:
            return await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0

        await eventually(drained, timeout=60, what="the outbox drained by two relays")
        records = await read_all(kafka_bootstrap, f"{topic_prefix}vigil.data", expect=ROWS, timeout=30)
        assert [int(r.value) for r in records] == list(range(ROWS))
        assert await pool.fetchval("SELECT max(publish_count) FROM outbox") == 1
    finally:
        for r in relays:
            await r.stop()
        for p in producers:
            await p.stop()
        await pool.close()


async def test_a_relay_waits_while_another_replica_publishes(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str
) -> None:
    """Deterministic form of the ordering rule: while one replica holds the schema's relay lock, another relay
    publishes nothing (it would otherwise take the next slice and race the first to the broker)."""
    from vigil.bus.outbox import _relay_lock_key

    namer = TopicNamer(topic_prefix)
    await ensure_topics(kafka_bootstrap, namer.all_physical(), 1, 1)
    pool = await create_pool(fresh_db, "relaylock")
    producer = BusProducer(kafka_bootstrap, service="relaylock", namer=namer, signer=signing_key(TEST_PRODUCER))
    relay = OutboxRelay(pool, producer, schema="relaylock", service="relaylock")
    try:
        await migrate(pool, "relaylock", [("bus", BUS_MIGRATIONS)])
        await producer.start()
        async with pool.acquire() as conn, conn.transaction():
            await enqueue_raw(conn, "only", "vigil.data", "k", b"x", [])
        other_replica = await pool.acquire()
        try:
            async with other_replica.transaction():
                await other_replica.execute("SELECT pg_advisory_xact_lock($1)", _relay_lock_key("relaylock"))
                assert await relay.publish_batch() == 0
        finally:
            await pool.release(other_replica)
        assert await relay.publish_batch() == 1
    finally:
        await producer.stop()
        await pool.close()


class _RefusesAfter(BusProducer):
    """The real producer, except that its aiokafka client refuses to take records after the first ``accept`` (as
    aiokafka does when its broker connection is gone: ``NodeNotReadyError`` from ``send``) until told otherwise."""

    def __init__(self, *args: object, accept: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.accept = accept
        self.taken = 0
        take = self._producer.send

        async def send_or_refuse(*send_args: Any, **send_kwargs: Any) -> Any:
            if self.taken >= self.accept:
                raise NodeNotReadyError("the broker went away (fault injected by the test)")
            self.taken += 1
            return await take(*send_args, **send_kwargs)

        self._producer.send = send_or_refuse  # type: ignore[method-assign]


async def test_a_failed_send_keeps_the_rows_already_acknowledged(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str
) -> None:
    """A round that fails part-way marks what the broker acknowledged and leaves only the rest pending: the next
    round sends the rest, and no row reaches the bus twice (the relay used to roll the whole batch back while its
    first sends were still being delivered, and send them all again)."""
    namer = TopicNamer(topic_prefix)
    await ensure_topics(kafka_bootstrap, namer.all_physical(), 1, 1)
    pool = await create_pool(fresh_db, "relayfail")
    producer = _RefusesAfter(
        kafka_bootstrap, service="relayfail", namer=namer, signer=signing_key(TEST_PRODUCER), accept=30
    )
    relay = OutboxRelay(pool, producer, schema="relayfail", service="relayfail", batch_size=100)
    try:
        await migrate(pool, "relayfail", [("bus", BUS_MIGRATIONS)])
        async with pool.acquire() as conn, conn.transaction():
            for i in range(80):
                await enqueue_raw(conn, f"row-{i}", "vigil.data", "one-key", str(i).encode(), [])
        await producer.start()

        with pytest.raises(NodeNotReadyError):
            await relay.publish_batch()
        published = await pool.fetch("SELECT seq FROM outbox WHERE published_at IS NOT NULL ORDER BY seq")
        assert len(published) == 30, "the 30 acknowledged rows are marked, the 50 never sent are not"

        producer.accept = 10_000  # the broker is back
        assert await relay.publish_batch() == 50
        records = await read_all(kafka_bootstrap, f"{topic_prefix}vigil.data", expect=81, timeout=15)
        assert [int(r.value) for r in records] == list(range(80)), "each row once, in order"
        assert await pool.fetchval("SELECT max(publish_count) FROM outbox") == 1
    finally:
        await producer.stop()
        await pool.close()
