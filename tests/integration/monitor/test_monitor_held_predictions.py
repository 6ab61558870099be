"""Predictions of a version the monitor has not seen registered yet (``vigil.models`` and ``vigil.predictions`` are
consumed independently, so at start-up a batch can be read before its version's ``model.version.registered``) are
held and folded once the registration comes: their features and fairness groups count in the window of their own
time — once, even across a restart in which the broker delivers every record again."""

from __future__ import annotations

import time
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
    window_start,
)
from prometheus_client import REGISTRY

from support.services import eventually
from vigil.events import topics
from vigil.monitor.state import window_key

pytestmark = pytest.mark.integration

ROWS = 600


async def _never_commit(*_: Any, **__: Any) -> None:  # a crash: nothing consumed is ever committed to Kafka
    return None


def _consumed(mon: Monitor, *event_ids: str) -> Any:
    async def probe() -> bool:
        rows = await mon.fetch("SELECT count(*) AS n FROM inbox WHERE event_id = ANY($1::text[])", list(event_ids))
        return int(rows[0]["n"]) == len(event_ids)

    return probe


async def test_predictions_before_their_registration_keep_features_and_groups(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(
        fresh_db, kafka_bootstrap, topic_prefix, tokens, window_s=5.0, fairness_attribute="region"
    )
    # A window already behind the stream: nothing but the hold keeps it from closing before the registration comes.
    at = window_start(time.time(), settings.window_s, ahead=-2)
    pred, ids, (truth, _) = batch("early-v", "m", 1, "stable", at, ROWS, seed=21)
    truth_events = labels("early-v", ids, truth)
    key = window_key("early-v", 1, "stable", int(at.timestamp() * 1000))

    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        consumer = mon.service.runtime.consumer
        assert consumer is not None
        consumer._commit = _never_commit  # type: ignore[method-assign]
        # the version's traffic and its ground truth first; its registration has not been published yet
        await mon.publish(topics.PREDICTIONS, pred, key="early-v")
        await mon.publish(topics.LABELS, *truth_events, key="early-v")
        await eventually(
            _consumed(mon, pred.id, *(e.id for e in truth_events)), timeout=60, what="predictions and labels consumed"
        )
        assert [r["rows"] for r in await mon.fetch("SELECT rows FROM held_predictions")] == [ROWS]
        assert await mon.window(key) is None  # nothing folded without the reference

    # a new process (a clean restart): every record is delivered again, the inbox refuses them; then the registration
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        await mon.publish(topics.MODELS, registered("m", 1, reference()), key="m")
        rows = await eventually(
            lambda: mon.fetch(
                "SELECT predictions, labels, figures FROM windows "
                "WHERE kind = 'tumbling' AND deployment = 'early-v' AND labels = $1",
                ROWS,
            ),
            timeout=90,
            what="the window closed with its labels",
        )
        fig = rows[0]["figures"]
        assert (rows[0]["predictions"], fig["late_rows"]) == (ROWS, 0)  # counted once, in the window of their time
        assert sorted(fig["features"]) == ["f0", "f1", "f2", "region"], fig["features"]
        assert {name: f["count"] for name, f in fig["features"].items()} == dict.fromkeys(fig["features"], ROWS)
        assert fig["fairness_groups"] == ["north", "south", "other"]
        assert (fig["fairness"]["count"], fig["fairness"]["missing"]) == (ROWS, 0), fig["fairness"]
        st = await mon.window(key)
        assert st is not None and (st.predictions, st.labels) == (ROWS, ROWS)
        assert not await mon.fetch("SELECT 1 FROM held_predictions")


async def test_predictions_of_a_version_never_registered_are_folded_when_the_hold_runs_out(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens, prediction_hold_s=1.0)
    metric = "vigil_monitor_held_predictions_dropped_total"
    before = REGISTRY.get_sample_value(metric, {"reason": "expired"}) or 0.0
    at = window_start(time.time(), settings.window_s, ahead=-2)
    pred, _, _ = batch("never-v", "m", 9, "stable", at, 300, seed=22)
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        await mon.publish(topics.PREDICTIONS, pred, key="never-v")
        # counted as before the fix (no reference: no features), a hold later — not lost, not held for ever
        rows = await eventually(
            lambda: mon.fetch("SELECT predictions, figures FROM windows WHERE deployment = 'never-v'"),
            timeout=60,
            what="the window closed after the hold ran out",
        )
        assert [(r["predictions"], r["figures"]["features"]) for r in rows] == [(300, {})]
        assert REGISTRY.get_sample_value(metric, {"reason": "expired"}) == before + 300
        assert not await mon.fetch("SELECT 1 FROM held_predictions")


async def test_a_batch_beyond_the_hold_cap_is_folded_at_once_and_counted(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(
        fresh_db, kafka_bootstrap, topic_prefix, tokens, prediction_hold_max_rows_per_version=500
    )
    metric = "vigil_monitor_held_predictions_dropped_total"
    before = REGISTRY.get_sample_value(metric, {"reason": "cap"}) or 0.0
    at = window_start(time.time(), settings.window_s, ahead=-2)
    first, _, _ = batch("full-v", "m", 4, "stable", at, 400, seed=23)
    second, _, _ = batch("full-v", "m", 4, "stable", at, 200, seed=24)  # 600 > 500: not held
    key = window_key("full-v", 4, "stable", int(at.timestamp() * 1000))
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        await mon.publish(topics.PREDICTIONS, first, second, key="full-v")
        await eventually(_consumed(mon, first.id, second.id), timeout=60, what="both batches consumed")
        assert [r["event_id"] for r in await mon.fetch("SELECT event_id FROM held_predictions")] == [first.id]
        assert REGISTRY.get_sample_value(metric, {"reason": "cap"}) == before + 200
        st = await mon.window(key)
        assert st is not None and st.predictions == 200  # folded as before the fix: counted, without features
        # the registration folds the held one into the same window, with the reference
        await mon.publish(topics.MODELS, registered("m", 4, reference()), key="m")
        rows = await eventually(
            lambda: mon.fetch("SELECT predictions, figures FROM windows WHERE deployment = 'full-v'"),
            timeout=60,
            what="the window closed",
        )
        assert rows[0]["predictions"] == 600
        assert {f["count"] for f in rows[0]["figures"]["features"].values()} == {400}
