"""Canary analysis through the real broker: a slower candidate → Failed + rollback.requested with evidence; an
equal one → Successful; a less accurate one is caught once its (late) labels arrive, and the late labels revise
the closed windows' quality figures."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from monitor_support import batch, labels, monitor_settings, reference, registered, run_monitor, tokens_in, window_start

from support.services import eventually
from vigil.events import topics

pytestmark = pytest.mark.integration


async def _of_type(mon: Any, kind: str, deployment: str) -> list[dict[str, Any]]:
    return [e for e in await mon.monitoring_events() if e["type"] == kind and e["data"]["deployment"] == deployment]


async def test_slow_candidate_rolled_back_equal_candidate_succeeds(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        ref = reference()
        await mon.publish(topics.MODELS, registered("m", 1, ref), registered("m", 2, ref), key="m")
        at = window_start(time.time(), settings.window_s, ahead=2)
        slow = [
            batch("slow", "m", 1, "stable", at, 600, seed=1, latency_ms=20)[0],
            batch("slow", "m", 2, "candidate", at, 600, seed=2, latency_ms=60)[0],
        ]
        good = [
            batch("good", "m", 1, "stable", at, 600, seed=3, latency_ms=20)[0],
            batch("good", "m", 2, "candidate", at, 600, seed=4, latency_ms=20)[0],
        ]
        await mon.publish(topics.PREDICTIONS, *slow, key="slow")
        await mon.publish(topics.PREDICTIONS, *good, key="good")

        rollbacks = await eventually(lambda: _of_type(mon, "rollback.requested", "slow"), timeout=60, what="rollback")
        r = rollbacks[0]["data"]
        assert r["reason"] == "candidate_worse" and r["candidate_version"] == 2 and r["stable_version"] == 1
        ev = {e["statistic"]: e for e in r["evidence"]}
        assert ev["latency.p99_ratio"]["breached"] and ev["latency.p99_ratio"]["value"] > 1.5
        assert ev["latency.p99_ratio"]["sample_size"] == 600 and r["policy_version"] == 1
        verdicts = await _of_type(mon, "analysis.verdict", "slow")
        assert [v["data"]["verdict"] for v in verdicts] == ["Failed"]

        ok = await eventually(lambda: _of_type(mon, "analysis.verdict", "good"), timeout=30, what="good verdict")
        assert ok[0]["data"]["verdict"] == "Successful"
        assert ok[0]["data"]["candidate_samples"] == 600 and ok[0]["data"]["stable_samples"] == 600
        assert not await _of_type(mon, "rollback.requested", "good")


async def test_late_labels_revise_quality_and_catch_a_less_accurate_candidate(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        ref = reference()
        await mon.publish(topics.MODELS, registered("m", 1, ref), registered("m", 2, ref), key="m")
        at = window_start(time.time(), settings.window_s, ahead=2)
        stable, s_ids, (s_truth, s_out) = batch("acc", "m", 1, "stable", at, 800, seed=5)
        cand, c_ids, (c_truth, c_out) = batch("acc", "m", 2, "candidate", at, 800, seed=6, flip=0.3)
        await mon.publish(topics.PREDICTIONS, stable, cand, key="acc")

        # the windows close without labels: equal latency → Successful at revision 0, no quality figures yet
        first = await eventually(lambda: _of_type(mon, "analysis.verdict", "acc"), timeout=60, what="first verdict")
        assert first[0]["data"]["verdict"] == "Successful"
        rows = await mon.fetch("SELECT revision, labels, figures FROM windows WHERE kind = 'tumbling'")
        assert {(r["revision"], r["labels"]) for r in rows} == {(0, 0)}
        assert all(r["figures"]["quality"] == {} for r in rows)

        # labels arrive after the windows closed
        await mon.publish(topics.LABELS, *labels("acc", s_ids, s_truth), *labels("acc", c_ids, c_truth), key="acc")

        async def revised() -> list[Any]:
            rs = await mon.fetch(
                "SELECT variant, revision, labels, figures FROM windows WHERE kind = 'tumbling' ORDER BY variant"
            )
            return rs if all(r["labels"] == 800 for r in rs) else []

        rows = await eventually(revised, timeout=60, what="windows revised by late labels")
        by_variant = {r["variant"]: r for r in rows}
        for variant, truth, out in (("stable", s_truth, s_out), ("candidate", c_truth, c_out)):
            fig = by_variant[variant]["figures"]
            assert by_variant[variant]["revision"] >= 1
            assert fig["quality"]["accuracy"] == pytest.approx(float(np.mean(truth == out)))
            assert fig["quality"]["count"] == 800 and "roc_auc" in fig["quality"]

        rollback = await eventually(lambda: _of_type(mon, "rollback.requested", "acc"), timeout=30, what="rollback")
        ev = {e["statistic"]: e for e in rollback[0]["data"]["evidence"]}
        assert ev["accuracy.drop"]["breached"] and ev["accuracy.drop"]["value"] > 0.02
        assert ev["accuracy.drop"]["p_value"] < 0.01 and ev["accuracy.drop"]["sample_size"] == 800
        verdicts = [v["data"]["verdict"] for v in await _of_type(mon, "analysis.verdict", "acc")]
        assert verdicts == ["Successful", "Failed"]
        revisions = [
            e["data"]["revision"]
            for e in await _of_type(mon, "monitor.window", "acc")
            if e["data"]["window"]["kind"] == "tumbling"
        ]
        assert 0 in revisions and max(revisions) >= 1
