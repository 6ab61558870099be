"""What the broker-security tests (TLS, SASL) check of a service's whole bus over a secured connection: one signed
``data.updated`` sent over it reaches the probe service and is applied, and the service's own producer wrote its
broker-epoch sentinel over it too."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from support.services import RunningService, eventually
from support.signing import signed_headers
from vigil.bus.client_options import KafkaSecurity
from vigil.bus.topics import EPOCH_TOPIC
from vigil.events import make_event
from vigil.events.catalog.data import DataUpdated


async def probe_applies_a_signed_event(
    probe: RunningService, bootstrap: str, topic_prefix: str, security: KafkaSecurity, *, over: str
) -> None:
    """Send a signed event to the running probe over ``security``; wait until it is applied (``over`` names the
    connection in the failure message); then check the probe's epoch sentinel can be read back over it."""
    event = make_event(
        DataUpdated(
            dataset="patients",
            content_digest="sha256:" + "ab" * 32,
            uri="file:///patients/v1.parquet",
            row_count=10,
            producer="ehr",
        ),
        source="test://upstream",
        actor="system:test",
    )
    value = event.canonical_bytes()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **security.client_kwargs())
    await producer.start()
    try:
        await producer.send_and_wait(f"{topic_prefix}vigil.data", value, key=b"patients", headers=signed_headers(value))
    finally:
        await producer.stop()

    async def applied() -> int:
        async with probe.runtime.pool.acquire() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM effects WHERE event_id = $1", event.id))

    await eventually(applied, what=f"the signed event, sent and consumed over {over}, verified and applied")
    # The service's own producer wrote its broker-epoch sentinel over the same connection security.
    assert await first_probe_value(bootstrap, f"{topic_prefix}{EPOCH_TOPIC}", security) is not None


async def first_probe_value(bootstrap: str, topic: str, security: KafkaSecurity, timeout: float = 60.0) -> bytes | None:
    """The first ``probe:`` record's value on ``topic`` read over ``security`` (None if none came in ``timeout``)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, **security.client_kwargs()
    )
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        value: bytes = record.value
                        if value.startswith(b"probe:"):
                            return value
    except TimeoutError:
        return None
    finally:
        await consumer.stop()
