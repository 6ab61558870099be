"""Injected drift on one feature → drift.detected naming it within one window; clean traffic → no drift event."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from monitor_support import batch, monitor_settings, reference, registered, run_monitor, tokens_in, window_start

from support.services import eventually
from vigil.events import topics

pytestmark = pytest.mark.integration


async def test_drift_on_one_feature_is_detected_and_named(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        await mon.publish(topics.MODELS, registered("churn", 1, reference()), key="churn")
        await eventually(lambda: mon.fetch("SELECT 1 FROM reference_profiles"), what="reference stored")
        # windows well ahead (8–10 s): the consumer may still be joining its group on a loaded CI machine,
        # and no batch may land in a window the closer already closed
        clean_at = window_start(time.time(), settings.window_s, ahead=4)
        drift_at = window_start(time.time(), settings.window_s, ahead=5)
        clean = [batch("shop", "churn", 1, "stable", clean_at, 600, seed=s)[0] for s in range(2)]
        drifted = [
            batch("shop", "churn", 1, "stable", drift_at, 600, seed=10 + s, shift={"f1": 1.5})[0] for s in range(2)
        ]
        await mon.publish(topics.PREDICTIONS, *clean, *drifted, key="shop")

        async def two_windows() -> list:
            return [
                r for r in await mon.fetch("SELECT figures FROM windows WHERE kind = 'tumbling' ORDER BY window_start")
            ]

        rows = await eventually(lambda: _at_least(two_windows, 2), timeout=60, what="two windows closed")
        assert [r["figures"]["predictions"] for r in rows[:2]] == [1200, 1200]

        events = await eventually(lambda: _drift_events(mon), timeout=30, what="drift.detected on the monitoring topic")
        assert len(events) == 1, "the clean window must not raise drift.detected"
        data = events[0]["data"]
        assert data["features"] == ["f1"]
        assert data["window"]["start"].startswith(drift_at.strftime("%Y-%m-%dT%H:%M:%S"))
        ev = data["evidence"][0]
        assert ev["feature"] == "f1" and ev["statistic"] == "psi" and ev["value"] > ev["threshold"] == 0.2
        assert ev["sample_size"] == 1200 and data["policy_version"] == 1
        windows = [e for e in await mon.monitoring_events() if e["type"] == "monitor.window"]
        assert {w["data"]["window"]["kind"] for w in windows} >= {"tumbling"}
        clean_fig = rows[0]["figures"]["features"]
        assert all(clean_fig[f]["psi"] < 0.2 for f in ("f0", "f1", "f2"))

        # the API: windows (paginated), health, policies (versioned) and the what-if replay
        page = (
            await mon.client.get("/v1/windows?deployment=shop&kind=tumbling&limit=1", headers=mon.h("viewer"))
        ).json()
        assert len(page["items"]) == 1 and page["next"] is not None
        assert (await mon.client.get("/v1/windows", headers=mon.h("nobody"))).status_code == 403
        health = (await mon.client.get("/v1/deployments/shop/health", headers=mon.h("viewer"))).json()
        assert health["status"] == "degraded" and health["versions"][0]["drifted_features"] == ["f1"]
        lenient = {"drift": {"numeric_threshold": 50.0}}
        assert (await mon.client.put("/v1/policies/shop", json=lenient, headers=mon.h("viewer"))).status_code == 403
        assert (await mon.client.put("/v1/policies/shop", json=lenient, headers=mon.h("scientist"))).status_code == 403
        put = await mon.client.put("/v1/policies/shop", json=lenient, headers=mon.h("risk"))
        assert put.status_code == 200 and put.json()["version"] == 2
        current = (await mon.client.get("/v1/policies/shop", headers=mon.h("viewer"))).json()
        assert current["version"] == 2 and current["policy"]["drift"]["numeric_threshold"] == 50.0
        assert (
            await mon.client.post("/v1/replay", json={"deployment": "shop"}, headers=mon.h("viewer"))
        ).status_code == 403
        replayed = (await mon.client.post("/v1/replay", json={"deployment": "shop"}, headers=mon.h("scientist"))).json()
        assert replayed["windows"] >= 2 and replayed["policy_version"] == 2 and replayed["decisions"] == []
        strict = {"deployment": "shop", "policy": {"drift": {"numeric_threshold": 0.2, "consecutive_windows": 1}}}
        replayed = (await mon.client.post("/v1/replay", json=strict, headers=mon.h("scientist"))).json()
        assert [d["type"] for d in replayed["decisions"]] == ["drift.detected"]
        assert replayed["decisions"][0]["features"] == ["f1"]
        assert len(await _drift_events(mon)) == 1, "the replay must not emit"


async def _at_least(probe, n):  # type: ignore[no-untyped-def]
    rows = await probe()
    return rows if len(rows) >= n else None


async def _drift_events(mon):  # type: ignore[no-untyped-def]
    return [e for e in await mon.monitoring_events() if e["type"] == "drift.detected"]
