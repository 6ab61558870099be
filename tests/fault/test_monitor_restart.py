"""The monitor restarted mid-window resumes from its Postgres window state without double counting; a poison record
on the prediction stream is dead-lettered with its reason and the consumer keeps consuming."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "monitor"))

from monitor_support import batch, monitor_settings, reference, registered, run_monitor, tokens_in, window_with_room

from support.kafka import produce_raw
from support.services import eventually
from vigil.events import topics

pytestmark = pytest.mark.fault


async def test_restart_mid_window_resumes_without_double_counting(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    # The window stays open ≥ 20 s: publish → restart (a consumer-group join) → publish, on a loaded CI machine.
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens, window_s=5.0, window_grace_s=1.0)
    at = window_with_room(settings.window_s, 20.0)
    first, _, _ = batch("r", "m", 1, "stable", at, 700, seed=1)
    second, _, _ = batch("r", "m", 1, "stable", at, 500, seed=2)

    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        await mon.publish(topics.MODELS, registered("m", 1, reference()), key="m")
        await eventually(lambda: mon.fetch("SELECT 1 FROM reference_profiles"), what="reference stored")
        await produce_raw(kafka_bootstrap, f"{topic_prefix}{topics.PREDICTIONS}", [b"{not json"], key=b"r")
        await mon.publish(topics.PREDICTIONS, first, key="r")

        async def counted() -> bool:
            return any(st.predictions == 700 for st in await mon.windows())

        await eventually(counted, timeout=60, what="first batch in the window state")
        letters = await eventually(
            lambda: mon.fetch("SELECT reason, topic FROM dead_letters"), timeout=30, what="poison dead-lettered"
        )
        assert [(r["reason"], r["topic"]) for r in letters] == [("malformed_json", topics.PREDICTIONS)]

    # a new process: the window state is where it was, in Postgres
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        await mon.publish(topics.PREDICTIONS, second, key="r")
        rows = await eventually(
            lambda: mon.fetch("SELECT revision, predictions FROM windows WHERE kind = 'tumbling'"),
            timeout=120,
            what="window closed after the restart",
        )
        assert [(r["revision"], r["predictions"]) for r in rows] == [(0, 1200)]
        windows = [e for e in await mon.monitoring_events() if e["type"] == "monitor.window"]
        assert [w["data"]["predictions"] for w in windows if w["data"]["window"]["kind"] == "tumbling"] == [1200]
