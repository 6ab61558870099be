"""Labels that reach the monitor before their predictions are held and joined when the predictions come — once,
even when a crash (no offset commit) makes the broker deliver every record again; labels whose prediction never
comes expire and are counted."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from monitor_support import (
    Monitor,
    batch,
    labels,
    monitor_settings,
    reference,
    registered,
    run_monitor,
    tokens_in,
    window_start,
    window_with_room,
)
from prometheus_client import REGISTRY

from support.services import eventually
from vigil.events import topics
from vigil.monitor.state import window_key

pytestmark = pytest.mark.integration


def _held(mon: Monitor, deployment: str, rows: int) -> Any:
    async def probe() -> bool:
        return await mon.held_rows(deployment) == rows

    return probe


async def _never_commit(*_: Any, **__: Any) -> None:  # a crash: nothing consumed is ever committed to Kafka
    return None


async def test_labels_before_predictions_join_once_across_a_crash(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens, window_s=5.0)
    at = window_with_room(settings.window_s, 15.0)  # open until the held labels joined in the first process
    pred, ids, (truth, outputs) = batch("early", "m", 1, "stable", at, 800, seed=7)
    key = window_key("early", 1, "stable", int(at.timestamp() * 1000))

    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        consumer = mon.service.runtime.consumer
        assert consumer is not None
        consumer._commit = _never_commit  # type: ignore[method-assign]
        await mon.publish(topics.MODELS, registered("m", 1, reference()), key="m")
        await eventually(lambda: mon.fetch("SELECT 1 FROM reference_profiles"), what="reference stored")
        # the ground truth first: nothing to join with yet, so the labels are held, not dropped
        await mon.publish(topics.LABELS, *labels("early", ids, truth), key="early")
        await eventually(_held(mon, "early", 800), timeout=60, what="labels held")
        await mon.publish(topics.PREDICTIONS, pred, key="early")

        async def joined() -> bool:
            st = await mon.window(key)
            return st is not None and st.labels == 800

        await eventually(joined, timeout=60, what="held labels joined to the predictions")

    # a new process: every record delivered again (nothing was committed); the inbox refuses them all
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        # sentinels behind the redelivered records on the same partitions: once they are processed, so is the rest
        sentinel_at = at + timedelta(seconds=2 * settings.window_s)
        sentinel, _, _ = batch("early", "m", 1, "stable", sentinel_at, 10, seed=8)
        await mon.publish(topics.PREDICTIONS, sentinel, key="early")
        (probe,) = labels("early", [uuid.uuid4().hex], np.array([1]))
        await mon.publish(topics.LABELS, probe, key="early")

        async def label_sentinel_held() -> bool:
            return bool(await mon.fetch("SELECT 1 FROM held_labels WHERE event_id = $1", probe.id))

        await eventually(label_sentinel_held, timeout=90, what="label sentinel processed")
        sentinel_key = window_key("early", 1, "stable", int(sentinel_at.timestamp() * 1000))

        async def prediction_sentinel_in() -> bool:
            return await mon.window(sentinel_key) is not None

        await eventually(prediction_sentinel_in, timeout=90, what="prediction sentinel processed")

        st = await mon.window(key)
        assert st is not None and st.predictions == 800 and st.labels == 800  # not 1 600
        rows = await eventually(
            lambda: mon.fetch("SELECT labels, figures FROM windows WHERE kind = 'tumbling' AND window_start = $1", at),
            timeout=90,
            what="window closed",
        )
        assert [r["labels"] for r in rows] == [800]
        assert rows[0]["figures"]["quality"]["accuracy"] == pytest.approx(float(np.mean(truth == outputs)))


async def test_labels_whose_prediction_never_comes_expire_and_are_counted(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens, label_hold_s=1.0)
    before = REGISTRY.get_sample_value("vigil_monitor_held_labels_dropped_total", {"reason": "expired"}) or 0.0
    at = window_start(time.time(), settings.window_s, ahead=2)
    pred, ids, (truth, _) = batch("gone", "m", 1, "stable", at, 300, seed=9)
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        await mon.publish(topics.MODELS, registered("m", 1, reference()), key="m")
        await mon.publish(topics.LABELS, *labels("gone", ids, truth), key="gone")

        async def expired() -> bool:
            after = REGISTRY.get_sample_value("vigil_monitor_held_labels_dropped_total", {"reason": "expired"})
            return after == before + 300

        await eventually(expired, timeout=60, what="300 held labels expired")
        assert await mon.held_rows("gone") == 0
        assert not await mon.fetch("SELECT 1 FROM held_labels")  # deleted, so a restart cannot bring them back

        # the predictions come after the hold ran out: they are counted, the expired labels are not
        await mon.publish(topics.PREDICTIONS, pred, key="gone")
        rows = await eventually(
            lambda: mon.fetch("SELECT predictions, labels FROM windows WHERE kind = 'tumbling'"),
            timeout=60,
            what="window closed",
        )
        assert [(r["predictions"], r["labels"]) for r in rows] == [(300, 0)]
