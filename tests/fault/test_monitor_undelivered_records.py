"""Records faust reads but never hands to the agent are fetched again and counted once (docs/faults.md, bug 3).

The drop is produced with the effect faust's drops have (during recovery its delivery is abandoned while the flow is
suspended, or its stream iterator skips an event taken while flow control is inactive): the record is read, the read
position moves past it, and it never reaches the agent. Two shapes of it:

- a later record arrives afterwards → the agent sees a jump in offsets (offset_watch: skip, seek back);
- nothing arrives afterwards → only the stall check (the log holds records the agent was never handed) finds it.

Either way the window must count every batch exactly once and the committed offset must reach the log's end only
once every record was handled.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "monitor"))

from monitor_support import (
    Monitor,
    batch,
    monitor_settings,
    reference,
    registered,
    run_monitor,
    tokens_in,
    window_start,
)

from support.services import eventually
from vigil.events import topics

pytestmark = pytest.mark.fault


def _streams(mon: Monitor) -> Any:
    return mon.service.runtime.state["streams"]


def _predictions_tp(mon: Monitor) -> Any:
    streams = _streams(mon)
    physical = f"{mon.prefix}{topics.PREDICTIONS}"
    tps = [tp for tp in streams.app.consumer.assignment() if tp.topic == physical]
    assert tps, "the monitor holds no partition of the prediction stream"
    return tps


def _counted(mon: Monitor) -> int:
    return sum(st.predictions for st in _streams(mon).live.values())


async def _publish_undelivered(mon: Monitor, event: Any) -> None:
    """Publish ``event`` so that faust reads it and never hands it on: the conductor's callback for its partition
    returns without delivering that one offset (what faust's abandoned deliveries and skipped events amount to)."""
    streams = _streams(mon)
    consumer, conductor = streams.app.consumer, streams.app.topics
    tp = next(tp for tp in _predictions_tp(mon) if consumer.highwater(tp))  # the partition key "r" went to
    target = consumer.highwater(tp)  # the offset the next record gets
    original = conductor._tp_to_callback[tp]
    dropped: list[int] = []

    async def drop_once(message: Any) -> None:
        if message.offset == target and not dropped:
            dropped.append(message.offset)
            return
        await original(message)

    conductor._tp_to_callback[tp] = drop_once
    try:
        await mon.publish(topics.PREDICTIONS, event, key="r")

        async def was_dropped() -> bool:
            return bool(dropped)

        await eventually(was_dropped, timeout=30, what="faust read the record without delivering it")
    finally:
        conductor._tp_to_callback[tp] = original


async def _fully_committed(mon: Monitor) -> bool:
    consumer = _streams(mon).app.consumer
    ends = {tp: consumer.highwater(tp) for tp in _predictions_tp(mon)}
    return all(consumer._committed_offset[tp] == end for tp, end in ends.items() if end)


@pytest.mark.parametrize("shape", ["followed_by_a_record", "last_record"])
async def test_a_record_read_but_not_delivered_is_fetched_again(
    shape: str, fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(
        fresh_db, kafka_bootstrap, topic_prefix, tokens, window_s=120.0, window_grace_s=1.0, offset_stall_s=2.0
    )
    at = window_start(time.time(), settings.window_s)
    first, second, third = (batch("r", "m", 1, "stable", at, n, seed=s)[0] for n, s in ((300, 1), (200, 2), (50, 3)))
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        await mon.publish(topics.MODELS, registered("m", 1, reference()), key="m")
        await eventually(lambda: mon.fetch("SELECT 1 FROM reference_profiles"), what="reference stored")
        await mon.publish(topics.PREDICTIONS, first, key="r")

        async def first_counted() -> bool:
            return _counted(mon) == 300

        await eventually(first_counted, timeout=60, what="first batch counted")
        seeks_before = _streams(mon).watch.seeks

        await _publish_undelivered(mon, second)
        expected = 500
        if shape == "followed_by_a_record":
            await mon.publish(topics.PREDICTIONS, third, key="r")
            expected = 550

        async def all_counted() -> bool:
            return _counted(mon) >= expected

        await eventually(all_counted, timeout=60, what=f"{expected} predictions counted")
        await eventually(lambda: _fully_committed(mon), timeout=30, what="offsets committed to the log's end")
        await asyncio.sleep(1.5)  # records fetched twice by the seek must not count twice
        assert _counted(mon) == expected
        assert _streams(mon).watch.seeks > seeks_before  # repaired by a seek back, not by luck
