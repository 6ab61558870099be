"""The consumer heartbeats at a third of its session timeout (at most 3 s), so one late heartbeat is no eviction."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.bus.consumer import ConsumerConfig, EventConsumer
from vigil.bus.topics import TopicNamer

pytestmark = pytest.mark.unit


def _config(session_timeout_ms: int) -> ConsumerConfig:
    return ConsumerConfig(
        service="t", group_id="g", topics=["vigil.data"], source="vigil://t", session_timeout_ms=session_timeout_ms
    )


@pytest.mark.parametrize(
    ("session_ms", "heartbeat_ms"), [(2_000, 666), (6_000, 2_000), (10_000, 3_000), (45_000, 3_000)]
)
async def test_the_kafka_client_gets_a_third_of_the_session_at_most_three_seconds(
    session_ms: int, heartbeat_ms: int
) -> None:
    pool: Any = None  # never started: building the client touches neither the pool nor the broker
    consumer = EventConsumer("127.0.0.1:1", pool, _config(session_ms), TopicNamer("p."), trust=None)
    client = consumer._new_consumer()
    try:
        assert client._heartbeat_interval_ms == heartbeat_ms
        assert client._session_timeout_ms == session_ms
    finally:
        await client.stop()  # never started, but an unclosed client warns when collected (in some later test)
