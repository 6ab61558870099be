"""A prediction takes at most one ground-truth label: a label.observed delivered again (an upstream retry: the same
event id and bytes at a new offset) is refused by the inbox, and a different label event naming predictions that
have their label already adds nothing — also after a restart, since both marks live in Postgres."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    window_with_room,
)
from prometheus_client import REGISTRY

from support.services import eventually
from vigil.events import topics
from vigil.monitor.state import window_key

pytestmark = pytest.mark.integration


def _labels_at_least(mon: Monitor, key: str, n: int) -> Any:
    async def probe() -> bool:
        st = await mon.window(key)
        return st is not None and st.labels >= n

    return probe


def _duplicate_rows() -> float:
    return REGISTRY.get_sample_value("vigil_monitor_rows_total", {"stream": "labels", "outcome": "duplicate"}) or 0.0


def _duplicate_events() -> float:
    labels = {"service": "monitor", "topic": topics.LABELS, "type": "label.observed", "outcome": "duplicate"}
    return REGISTRY.get_sample_value("vigil_events_consumed_total", labels) or 0.0


async def test_a_label_event_delivered_twice_counts_once(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens, window_s=5.0)
    at = window_with_room(settings.window_s, 15.0)  # open until every label of the first process is in
    pred, ids, (truth, _) = batch("dup", "m", 1, "stable", at, 100, seed=21)
    key = window_key("dup", 1, "stable", int(at.timestamp() * 1000))
    (first,) = labels("dup", ids[:90], truth[:90])
    (second_opinion,) = labels("dup", ids[:90], 1 - truth[:90])  # another event id, the same predictions
    (rest,) = labels("dup", ids[90:], truth[90:])
    rows_before, events_before = _duplicate_rows(), _duplicate_events()

    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        await mon.publish(topics.MODELS, registered("m", 1, reference()), key="m")
        await eventually(lambda: mon.fetch("SELECT 1 FROM reference_profiles"), what="reference stored")
        await mon.publish(topics.PREDICTIONS, pred, key="dup")

        async def predictions_applied() -> bool:
            st = await mon.window(key)
            return st is not None and st.predictions == 100

        await eventually(predictions_applied, timeout=60, what="predictions applied")
        await mon.publish(topics.LABELS, first, key="dup")
        await eventually(_labels_at_least(mon, key, 90), timeout=60, what="first labels applied")
        # the same envelope again, then a second opinion, then the last ten labels behind them on the partition:
        # once those are in, the two before them were handled
        await mon.publish(topics.LABELS, first, second_opinion, rest, key="dup")
        await eventually(_labels_at_least(mon, key, 100), timeout=60, what="the last labels applied")
        st = await mon.window(key)
        assert st is not None and st.labels == 100  # not 100 + 90 + 90
        assert int(st.confusion.counts.sum()) == 100  # the quality state took each prediction's label once
        assert _duplicate_events() - events_before == 1  # the same event: refused by the inbox
        assert _duplicate_rows() - rows_before == 90  # the second opinion: every prediction had its label

    # a new process: the inbox and the labelled marks are in Postgres, so a re-send still adds nothing
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        (again,) = labels("dup", ids[:90], truth[:90])  # a new event id this time: the labelled marks refuse it
        await mon.publish(topics.LABELS, first, again, key="dup")

        async def both_refused() -> bool:
            return _duplicate_events() - events_before == 2 and _duplicate_rows() - rows_before == 180

        await eventually(both_refused, timeout=90, what="the re-sends seen as duplicates")
        st = await mon.window(key)
        assert st is not None and st.labels == 100
        rows = await eventually(
            lambda: mon.fetch("SELECT predictions, labels FROM windows WHERE kind = 'tumbling'"),
            timeout=90,
            what="window closed",
        )
        assert [(r["predictions"], r["labels"]) for r in rows] == [(100, 100)]
