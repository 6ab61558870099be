"""metric.observed without a version is attributed to the version serving at that time; a rollback is requested
once per rollout episode of a candidate, not once per candidate version forever."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from monitor_support import batch, monitor_settings, reference, registered, run_monitor, tokens_in, window_start

from support.services import eventually
from vigil.events import make_event, topics
from vigil.events.catalog.streams import MetricObserved

pytestmark = pytest.mark.integration


async def test_a_metric_without_version_counts_for_the_stable_version_then(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        await mon.publish(topics.MODELS, registered("m", 3, reference()), key="m")
        at = window_start(time.time(), settings.window_s, ahead=3)
        await mon.publish(topics.PREDICTIONS, batch("nov", "m", 3, "stable", at, 400, seed=1)[0], key="nov")

        async def counted() -> bool:
            return any(st.deployment == "nov" and st.predictions == 400 for st in await mon.windows())

        await eventually(counted, timeout=60, what="predictions counted")
        errors = MetricObserved(
            deployment="nov", name="errors", value=40, time=at + timedelta(seconds=0.5), labels={"status": "500"}
        )
        await mon.publish(topics.METRICS, make_event(errors, source="vigil://lb", actor="svc:lb"), key="nov")
        rows = await eventually(
            lambda: mon.fetch("SELECT version, figures FROM windows WHERE kind = 'tumbling'"),
            timeout=60,
            what="window closed",
        )
        assert [r["version"] for r in rows] == [3]
        fig = rows[0]["figures"]
        assert fig["errors"] == 40 and fig["requests"] == 440 and fig["error_rate"] == pytest.approx(40 / 440)


async def test_the_same_candidate_rolled_out_again_can_be_rolled_back_again(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        ref = reference()
        await mon.publish(topics.MODELS, registered("m", 1, ref), registered("m", 2, ref), key="m")
        first = window_start(time.time(), settings.window_s, ahead=2)
        again = window_start(time.time(), settings.window_s, ahead=5)  # two windows without candidate traffic
        events = []
        for n, at in enumerate((first, first + timedelta(seconds=settings.window_s), again)):
            events += [
                batch("re", "m", 1, "stable", at, 500, seed=10 + n, latency_ms=20)[0],
                batch("re", "m", 2, "candidate", at, 500, seed=20 + n, latency_ms=60)[0],
            ]
        await mon.publish(topics.PREDICTIONS, *events, key="re")

        async def two() -> list[dict[str, Any]]:
            found = [e for e in await mon.monitoring_events() if e["type"] == "rollback.requested"]
            return found if len(found) >= 2 else []

        rollbacks = await eventually(two, timeout=90, what="a rollback per rollout episode")
        starts = sorted(r["data"]["window"]["start"] for r in rollbacks)
        # one for the first rollout (its second window is the same episode: no second request), one for the next
        assert len(rollbacks) == 2 and starts[0].startswith(first.isoformat()[:19])
        assert starts[1].startswith(again.isoformat()[:19])
        assert all(r["data"]["candidate_version"] == 2 for r in rollbacks)
