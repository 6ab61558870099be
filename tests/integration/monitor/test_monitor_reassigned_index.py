"""Rows recovered into the tables after the join index was first built are joinable too (bug 3's second path).

A restarted monitor is often assigned some partitions first and the rest a rebalance later, when the group evicts
the member it replaces; faust recovers the tables of those partitions then. The label join index lives in memory
and was built from the tables once, at the first record: the later partitions' prediction rows were in the
``joins`` table but not in the index, so labels for them were held until they expired (the windows under-counted).

Here the partition-level part of that history is reproduced on a running monitor: a batch is in the ``joins``
table (the monitor wrote it there) but not in the in-memory index, as for rows recovered after the first build;
then faust's "partitions assigned" callback runs, as it does before such a recovery. Labels for that batch must
join, and labels for a batch that was in the index all along must count once, not twice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from monitor_support import batch, labels, monitor_settings, reference, registered, run_monitor, tokens_in, window_start

from support.services import eventually
from vigil.events import topics
from vigil.monitor.state import window_key

pytestmark = pytest.mark.integration

ROWS = 400


def _window(streams: Any, key: str, predictions: int, labelled: int) -> Any:
    async def probe() -> bool:
        st = streams.live.get(key)
        return st is not None and st.predictions == predictions and st.labels == labelled

    return probe


async def test_rows_recovered_after_the_first_index_build_are_joined(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens, window_s=30.0)
    at = window_start(time.time(), settings.window_s, ahead=1)
    start_ms = int(at.timestamp() * 1000)
    late_pred, late_ids, (late_truth, _) = batch("recovered", "m", 1, "stable", at, ROWS, seed=11)
    kept_pred, kept_ids, (kept_truth, _) = batch("indexed", "m", 1, "stable", at, ROWS, seed=12)
    late_key = window_key("recovered", 1, "stable", start_ms)
    kept_key = window_key("indexed", 1, "stable", start_ms)

    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        streams = mon.service.runtime.state["streams"]
        await mon.publish(topics.MODELS, registered("m", 1, reference()), key="m")
        await eventually(lambda: mon.fetch("SELECT 1 FROM reference_profiles"), what="reference stored")
        await mon.publish(topics.PREDICTIONS, late_pred, key="recovered")
        await mon.publish(topics.PREDICTIONS, kept_pred, key="indexed")
        await eventually(_window(streams, late_key, ROWS, 0), timeout=60, what="first batch counted")
        await eventually(_window(streams, kept_key, ROWS, 0), timeout=60, what="second batch counted")
        batch_key = f"{late_key}|{late_pred.id}"
        assert batch_key in streams.joins, "the monitor keeps each batch's join rows in the joins table"

        # In the table, not in memory: what a partition recovered after the first build looks like.
        streams.indexes.pop("recovered")
        streams.batch_keys.pop(late_key)
        await streams._on_assigned()  # faust's on_partitions_assigned, which precedes that recovery

        await mon.publish(topics.LABELS, *labels("recovered", late_ids, late_truth), key="recovered")
        await mon.publish(topics.LABELS, *labels("indexed", kept_ids, kept_truth), key="indexed")
        await eventually(_window(streams, late_key, ROWS, ROWS), timeout=60, what="labels of recovered rows joined")
        await eventually(_window(streams, kept_key, ROWS, ROWS), timeout=60, what="labels of indexed rows joined")
        assert int(streams.held_labels["recovered"].rows) == 0, "no label may wait for a prediction we have"
        assert streams.live[kept_key].labels == ROWS, "rows indexed twice would count their labels twice"
