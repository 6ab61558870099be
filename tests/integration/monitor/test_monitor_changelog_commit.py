"""A source offset is never committed before the table state its record produced is on the broker.

docs/faults.md, bug "records applied before a kill -9 can be missing after the restart": faust commits offsets
after ``producer.flush()``, but the producer buffer's flush gives up after 0.1 s without a message handed on, so a
changelog write could still be in the process's memory when its record's offset was committed — a kill -9 then
lost the record. The test makes that window permanent (the process "dies" before the ``windows`` changelog write
leaves it: the write is swallowed), forces a commit, then stops the process as a kill would (no commit after that
point) and starts a new one: the record must be delivered again and counted, not lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from monitor_support import batch, monitor_settings, reference, registered, run_monitor, tokens_in, window_start

from support.services import eventually
from vigil.events import topics
from vigil.monitor.state import window_key

pytestmark = pytest.mark.integration


async def test_an_offset_is_not_committed_before_its_changelog_write_lands(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens, window_s=30.0)
    at = window_start(time.time(), settings.window_s, ahead=1)
    pred, _, _ = batch("lost", "m", 1, "stable", at, 300, seed=31)
    key = window_key("lost", 1, "stable", int(at.timestamp() * 1000))

    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        streams = mon.service.runtime.state["streams"]
        await mon.publish(topics.MODELS, registered("m", 1, reference()), key="m")
        await eventually(lambda: mon.fetch("SELECT 1 FROM reference_profiles"), what="reference stored")
        changelog = streams.windows.changelog_topic
        deliver = changelog.publish_message
        swallowed: list[Any] = []

        async def never_leaves_the_process(fut: Any, wait: bool = False) -> Any:
            """The window's changelog write is still in memory when the process dies: it never reaches the broker."""
            swallowed.append(fut)
            return fut

        changelog.publish_message = never_leaves_the_process
        await mon.publish(topics.PREDICTIONS, pred, key="lost")

        async def applied() -> bool:  # the record is applied in memory (its event id is the handler's last mark)
            st = streams.live.get(key)
            return st is not None and pred.id in st.events and bool(swallowed)

        await eventually(applied, timeout=60, what="the batch applied in memory")
        await asyncio.sleep(0)  # let the agent return from the record if it is going to
        await streams.app.consumer.commit()  # what the commit timer does: flush the producer, commit acked offsets

        async def killed(*_: Any, **__: Any) -> bool:  # kill -9: nothing is committed after this point
            return False

        streams.app.consumer._commit = killed
        changelog.publish_message = deliver

    # the process is gone with the write it never sent; a new one recovers the tables and resumes from the commit
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        streams = mon.service.runtime.state["streams"]
        sentinel_at = window_start(time.time(), settings.window_s, ahead=3)
        sentinel, _, _ = batch("lost", "m", 1, "stable", sentinel_at, 10, seed=32)
        await mon.publish(topics.PREDICTIONS, sentinel, key="lost")  # behind the first batch on its partition
        sentinel_key = window_key("lost", 1, "stable", int(sentinel_at.timestamp() * 1000))

        async def sentinel_in() -> bool:
            return sentinel_key in streams.live

        await eventually(sentinel_in, timeout=90, what="the sentinel batch processed")
        st = await streams._load(key)
        assert st is not None and st.predictions == 300  # delivered again and counted, not lost
