"""Raw Kafka access for tests: what an upstream system (or an attacker) can put on a topic, and reading it back."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from support.signing import signed_headers
from vigil.events import Envelope
from vigil.events.signing import SigningKey


async def produce_raw(
    bootstrap: str,
    topic: str,
    values: list[bytes],
    *,
    key: bytes | None = b"k",
    signer: SigningKey | None = None,
    sign: bool = True,
) -> None:
    """Write raw bytes to a physical topic, in order, same key (so same partition), each signed — by ``signer``, or
    by the key allowed to produce the type the value claims (``support.signing``); ``sign=False``: unsigned."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for value in values:
            headers = signed_headers(value, signer) if sign else []
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def produce_events(
    bootstrap: str,
    topic: str,
    events: list[Envelope],
    *,
    key: bytes | None = b"k",
    signer: SigningKey | None = None,
    sign: bool = True,
) -> None:
    await produce_raw(bootstrap, topic, [e.canonical_bytes() for e in events], key=key, signer=signer, sign=sign)


async def read_all(bootstrap: str, topic: str, *, expect: int, timeout: float = 30.0) -> list[ConsumerRecord[Any, Any]]:
    """Read a physical topic from the beginning until ``expect`` records arrived (or time ran out)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    records: list[ConsumerRecord[Any, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while len(records) < expect:
                batch = await consumer.getmany(timeout_ms=500)
                for recs in batch.values():
                    records.extend(recs)
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return records
