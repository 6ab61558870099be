"""The shared LISTEN/NOTIFY wake-up loop (vigil.bus.wakeup) against the real Postgres and, for the relay, broker.

Every worker here polls only every 10 minutes, so anything that happens within a test's ``eventually`` was caused by
a NOTIFY or by the loop's own (re)subscription — not by the fallback poll.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from support.kafka import read_all
from support.services import eventually
from support.signing import TEST_PRODUCER, signing_key
from vigil.bus.outbox import OutboxRelay, enqueue_raw
from vigil.bus.producer import BusProducer
from vigil.bus.topics import TopicNamer, ensure_topics
from vigil.bus.wakeup import NotifyWakeup
from vigil.service.db import BUS_MIGRATIONS, create_pool, migrate

pytestmark = pytest.mark.integration

CHANNEL = "vigil_test_wakeup"
NEVER_S = 600.0


class Rounds:
    """The work function: records, per round, how many subscriptions the loop had made by then."""

    def __init__(self) -> None:
        self.wakeup: NotifyWakeup | None = None
        self.seen: list[int] = []

    async def __call__(self) -> bool:
        assert self.wakeup is not None
        self.seen.append(self.wakeup.subscriptions)
        return False


@pytest.fixture
async def pool(fresh_db: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(fresh_db, "wakeuptest")
    try:
        yield pool
    finally:
        await pool.close()


async def _listener_pids(pool: asyncpg.Pool) -> list[int]:
    rows = await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = $1",
        f'LISTEN "{CHANNEL}"',
    )
    return [r["pid"] for r in rows]


async def test_a_notify_wakes_the_worker_long_before_the_poll(pool: asyncpg.Pool) -> None:
    rounds = Rounds()
    wakeup = NotifyWakeup(pool, CHANNEL, rounds, name="wakeup-test", poll_s=NEVER_S)
    rounds.wakeup = wakeup
    await wakeup.start()
    try:
        # The first round runs at once, after subscribing.
        await eventually(lambda: _ready(wakeup, rounds, 1), what="the first round")
        for expected in (2, 3):
            await pool.execute("SELECT pg_notify($1, '')", CHANNEL)
            await eventually(lambda n=expected: _ready(wakeup, rounds, n), what=f"round {expected} after a NOTIFY")
        assert wakeup.subscriptions == 1
    finally:
        await wakeup.stop()
    assert await _listener_pids(pool) == [], "stop() left the LISTEN connection subscribed"


async def test_a_killed_listen_connection_is_replaced_and_checked_at_once(pool: asyncpg.Pool) -> None:
    rounds = Rounds()
    wakeup = NotifyWakeup(pool, CHANNEL, rounds, name="wakeup-test", poll_s=NEVER_S, backoff_s=0.05)
    rounds.wakeup = wakeup
    await wakeup.start()
    try:
        await eventually(lambda: _ready(wakeup, rounds, 1), what="the first round")
        (pid,) = await _listener_pids(pool)
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)

        # A new subscription, and a round right after it: NOTIFYs sent while nobody listened are lost, rows are not.
        async def resubscribed() -> bool:
            return wakeup.listening and 2 in rounds.seen

        await eventually(resubscribed, what="a round after subscribing again")
        (new_pid,) = await _listener_pids(pool)
        assert new_pid != pid
        # And the new subscription delivers.
        before = len(rounds.seen)
        await pool.execute("SELECT pg_notify($1, '')", CHANNEL)
        await eventually(
            lambda: _ready(wakeup, rounds, before + 1), what="a round after a NOTIFY on the new connection"
        )
    finally:
        await wakeup.stop()


async def test_the_outbox_relay_publishes_on_notify_not_on_its_poll(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str
) -> None:
    namer = TopicNamer(topic_prefix)
    await ensure_topics(kafka_bootstrap, namer.all_physical(), 1, 1)
    pool = await create_pool(fresh_db, "relaywake")
    producer = BusProducer(kafka_bootstrap, service="relaywake", namer=namer, signer=signing_key(TEST_PRODUCER))
    # A 2-minute poll interval: the relay's fallback wait is five of them.
    relay = OutboxRelay(pool, producer, schema="relaywake", service="relaywake", poll_interval_ms=120_000)
    try:
        await migrate(pool, "relaywake", [("bus", BUS_MIGRATIONS)])
        await producer.start()
        await relay.start()

        async def drained() -> bool:
            return bool(await pool.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"))

        for i in range(2):  # the second row arrives while the relay is idle, waiting
            async with pool.acquire() as conn, conn.transaction():
                await enqueue_raw(conn, f"row-{i}", "vigil.data", "k", str(i).encode(), [])
            await eventually(drained, what=f"row {i} published")
        records = await read_all(kafka_bootstrap, f"{topic_prefix}vigil.data", expect=2, timeout=30)
        assert [r.value for r in records] == [b"0", b"1"]
    finally:
        await relay.stop()
        await producer.stop()
        await pool.close()


async def _ready(wakeup: NotifyWakeup, rounds: Rounds, count: int) -> bool:
    return wakeup.listening and len(rounds.seen) >= count
