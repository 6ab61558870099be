"""The embedded broker dies and comes back empty under a running monitor: its consumer re-joins on the new log
with its window state in Postgres untouched — it keeps consuming, counts what it had, counts what comes
after, and a batch re-sent after the loss (same event id) is not counted twice."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "monitor"))

from monitor_support import (
    batch,
    labels,
    monitor_settings,
    reference,
    registered,
    run_monitor,
    tokens_in,
    window_with_room,
)

from support.services import eventually
from support.testinfra import KafkaUnderTest
from vigil.events import topics

pytestmark = pytest.mark.fault


async def test_monitor_keeps_its_windows_and_consumes_again_after_the_broker_lost_its_log(
    fresh_db: str, kafka_bootstrap: str, broker_control: KafkaUnderTest, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    # The window stays open ≥ 30 s: publish → broker loss noticed → publish again on the new log.
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens, window_s=5.0, window_grace_s=1.0)
    at = window_with_room(settings.window_s, 30.0)
    first, first_ids, (first_truth, _) = batch("r", "m", 1, "stable", at, 700, seed=1)
    second, _, _ = batch("r", "m", 1, "stable", at, 500, seed=2)

    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        await mon.publish(topics.MODELS, registered("m", 1, reference()), key="m")
        await eventually(lambda: mon.fetch("SELECT 1 FROM reference_profiles"), what="reference stored")
        await mon.publish(topics.PREDICTIONS, first, key="r")

        async def counts() -> tuple[int, int]:
            st = next(iter(await mon.windows()), None)
            return (st.predictions, st.labels) if st is not None else (0, 0)

        async def counted(want: tuple[int, int]) -> bool:
            return await counts() == want

        async def restarted() -> bool:
            return mon.service.runtime.epoch.losses >= 1

        await eventually(lambda: counted((700, 0)), timeout=60, what="first batch counted")

        broker_control.restart()
        await eventually(restarted, timeout=90, what="the broker loss seen")
        assert await counts() == (700, 0), "the window state survived the broker loss (it is in Postgres)"

        # On the new log: the first batch again (an upstream retry, same event id), a new batch, the first's labels.
        await mon.publish(topics.PREDICTIONS, first, second, key="r")
        await mon.publish(topics.LABELS, *labels("r", first_ids, first_truth), key="r")
        await eventually(lambda: counted((1200, 700)), timeout=90, what="the new log consumed")

        rows = await eventually(
            lambda: mon.fetch("SELECT predictions, labels FROM windows WHERE kind = 'tumbling'"),
            timeout=150,
            what="the window closed",
        )
        assert [(r["predictions"], r["labels"]) for r in rows] == [(1200, 700)]
