"""Retention: dead letters (which keep raw records, e.g. a patient's features) expire; topics carry explicit
retention instead of the broker's default."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from support.signing import TEST_PRODUCER, signing_key
from vigil.bus.dead_letters import DeadLetter, record_dead_letter
from vigil.bus.outbox import OutboxRelay
from vigil.bus.producer import BusProducer
from vigil.bus.topics import TOPIC_CONFIGS, TopicNamer, ensure_topics
from vigil.events import topics
from vigil.service.db import BUS_MIGRATIONS, create_pool, migrate

pytestmark = pytest.mark.integration

DAY_S = 86_400.0


def _letter(n: int) -> DeadLetter:
    return DeadLetter(
        dedupe_key=f"poison-{n}",
        group="vigil-monitor",
        topic="vigil.predictions",
        partition=0,
        offset=n,
        key="triage",
        value=b'{"features": {"age": 71, "systolic_bp": 180}}',
        headers=[],
        reason="schema",
        error="not a prediction.logged",
        attempts=3,
    )


async def test_dead_letters_expire_after_their_retention_and_not_before(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str
) -> None:
    namer = TopicNamer(topic_prefix)
    pool = await create_pool(fresh_db, "retention")
    producer = BusProducer(kafka_bootstrap, service="retention", namer=namer, signer=signing_key(TEST_PRODUCER))
    try:
        await migrate(pool, "retention", [("bus", BUS_MIGRATIONS)])
        async with pool.acquire() as conn:
            for n in range(3):
                assert await record_dead_letter(conn, _letter(n))
            # Letter 0 was last touched 31 days ago, letter 1 29 days ago, letter 2 now.
            await conn.execute("UPDATE dead_letters SET updated_at = now() - interval '31 days' WHERE \"offset\" = 0")
            await conn.execute("UPDATE dead_letters SET updated_at = now() - interval '29 days' WHERE \"offset\" = 1")

        same = {"schema": "retention", "service": "retention"}
        keep_forever = OutboxRelay(pool, producer, **same, dead_letter_retention_s=None)
        assert await keep_forever.expire_dead_letters() == 0
        relay = OutboxRelay(pool, producer, **same, dead_letter_retention_s=30 * DAY_S)
        assert await relay.expire_dead_letters() == 1
        left = await pool.fetch('SELECT "offset" FROM dead_letters ORDER BY "offset"')
        assert [r["offset"] for r in left] == [1, 2]
        assert await relay.expire_dead_letters() == 0
    finally:
        await pool.close()


async def test_every_topic_is_created_with_an_explicit_retention(kafka_bootstrap: str, topic_prefix: str) -> None:
    namer = TopicNamer(topic_prefix)
    assert {name.removeprefix("vigil.") for name in topics.ALL} | {"_epoch"} == set(TOPIC_CONFIGS)
    assert all("retention.ms" in config for config in TOPIC_CONFIGS.values())
    await ensure_topics(kafka_bootstrap, namer.all_physical(), 1, 1)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        wanted = [topics.PREDICTIONS, topics.DLQ, topics.AUDIT]
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, namer.physical(t)) for t in wanted]
        )
    finally:
        await admin.close()
    found: dict[str, str] = {}
    for response in described:
        for resource in response.resources:
            name, entries = resource[3], resource[4]
            found.update({namer.logical(name): value for key, value, *_ in entries if key == "retention.ms"})
    assert found == {t: TOPIC_CONFIGS[t.removeprefix("vigil.")]["retention.ms"] for t in wanted}
