"""The consumer's poll linger: a small poll is followed by a pause, a full or half-full one is not, 0 turns it off."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from vigil.bus.consumer import ConsumerConfig, EventConsumer
from vigil.bus.topics import TopicNamer
from vigil.deployer.settings import DeployerSettings
from vigil.service.settings import ServiceSettings

pytestmark = pytest.mark.unit

TP = TopicPartition("p.vigil.data", 0)


def _consumer(linger_ms: int, max_poll_records: int = 10) -> EventConsumer:
    config = ConsumerConfig(
        service="t",
        group_id="g",
        topics=["vigil.data"],
        source="vigil://t",
        max_poll_records=max_poll_records,
        poll_linger_ms=linger_ms,
    )
    pool: Any = None  # never started: _linger touches neither the pool nor the broker
    return EventConsumer("127.0.0.1:1", pool, config, TopicNamer("p."), trust=None)


def _poll(count: int) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    records = [ConsumerRecord(TP.topic, TP.partition, i, 0, 0, None, b"{}", None, 0, 2, []) for i in range(count)]
    return {TP: records}


async def _lingered(consumer: EventConsumer, count: int) -> bool:
    """True if ``_linger`` was still waiting after 0.2 s (the consumers here linger a minute)."""
    try:
        await asyncio.wait_for(consumer._linger(_poll(count)), 0.2)
    except TimeoutError:
        return True
    return False


async def test_a_small_poll_is_followed_by_the_linger() -> None:
    assert await _lingered(_consumer(60_000), 1)
    assert await _lingered(_consumer(60_000), 4)  # 4 of 10: under half


async def test_a_half_full_or_full_poll_is_not() -> None:
    assert not await _lingered(_consumer(60_000), 5)
    assert not await _lingered(_consumer(60_000), 10)


async def test_zero_turns_it_off() -> None:
    assert not await _lingered(_consumer(0), 1)


def test_the_deployer_does_not_linger_where_the_other_services_do() -> None:
    """A rollback must not wait behind the event polled just before it; the services' quiet default is 10 ms."""
    assert ServiceSettings(database_url="postgresql://x/y").kafka_poll_linger_ms == 10
    assert DeployerSettings(database_url="postgresql://x/y").kafka_poll_linger_ms == 0
