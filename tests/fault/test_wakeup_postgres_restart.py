"""Postgres restarts under an idle outbox relay: its LISTEN connection dies with the server, the wake-up loop
notices, subscribes again once Postgres is back, and a row written afterwards is published on its NOTIFY.

The relay's fallback poll is 10 minutes here, so a relay that kept waiting on its dead connection (what it did
before the shared loop watched the connection) would publish nothing within the test.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from support.kafka import read_all
from support.services import eventually
from support.signing import TEST_PRODUCER, signing_key
from support.testinfra import PostgresUnderTest
from vigil.bus.outbox import OutboxRelay, enqueue_raw
from vigil.bus.producer import BusProducer
from vigil.bus.topics import TopicNamer, ensure_topics
from vigil.service.db import BUS_MIGRATIONS, create_pool, migrate

pytestmark = pytest.mark.fault

#: What a query raises while Postgres is restarting.
DOWN = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def test_an_idle_relay_survives_a_postgres_restart(
    kafka_bootstrap: str, postgres_control: PostgresUnderTest, fresh_db: str, topic_prefix: str
) -> None:
    namer = TopicNamer(topic_prefix)
    await ensure_topics(kafka_bootstrap, namer.all_physical(), 1, 1)
    pool = await create_pool(fresh_db, "relayrestart")
    producer = BusProducer(kafka_bootstrap, service="relayrestart", namer=namer, signer=signing_key(TEST_PRODUCER))
    relay = OutboxRelay(pool, producer, schema="relayrestart", service="relayrestart", poll_interval_ms=120_000)

    async def published(seq_value: bytes) -> bool:
        try:
            return bool(await pool.fetchval("SELECT published_at IS NOT NULL FROM outbox WHERE value = $1", seq_value))
        except DOWN:
            return False

    try:
        await migrate(pool, "relayrestart", [("bus", BUS_MIGRATIONS)])
        await producer.start()
        await relay.start()
        async with pool.acquire() as conn, conn.transaction():
            await enqueue_raw(conn, "before", "vigil.data", "k", b"before", [])
        await eventually(lambda: published(b"before"), what="the row before the restart published")

        await asyncio.to_thread(postgres_control.restart)

        # The pool reconnects on its own; the relay's idle wait must have been broken by the lost connection.
        async def write_after() -> bool:
            try:
                async with pool.acquire() as conn, conn.transaction():
                    await enqueue_raw(conn, "after", "vigil.data", "k", b"after", [])
            except DOWN:
                return False
            return True

        await eventually(write_after, timeout=60, what="Postgres back and the row written")
        await eventually(lambda: published(b"after"), timeout=60, what="the row after the restart published")
        records = await read_all(kafka_bootstrap, f"{topic_prefix}vigil.data", expect=2, timeout=30)
        assert [r.value for r in records] == [b"before", b"after"]
    finally:
        await relay.stop()
        await producer.stop()
        await pool.close()
