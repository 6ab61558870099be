"""Label-free performance estimation through the real broker and Postgres: each version's reference profile carries
the calibration map its trainer would store; with ``actions.on_estimated = rollback`` a canary whose estimated
accuracy is clearly below the stable's is rolled back before any label arrives, and the verdict and rollback say it
was an estimate; the window figures (API and ``monitor.window``) keep the estimate, and once labels arrive the
realised figure beside it."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from monitor_support import FEATURES, labels, monitor_settings, reference, run_monitor, sha, tokens_in, window_start

from support.services import eventually
from vigil.cli.monitor import window_rows
from vigil.events import Envelope, make_event, topics
from vigil.events.catalog.models import ModelVersionRegistered
from vigil.events.catalog.streams import PredictionLogged
from vigil.trainer.profiling import calibration_dict

pytestmark = pytest.mark.integration

#: stable: sharp scores on the feature that drives the label; candidate: a weaker model (noisier input, flatter scores)
NOISE = {1: 0.0, 2: 1.2}
SLOPE = {1: 3.0, 2: 1.5}


def _rows(version: int, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, scores and true labels of ``version``'s model on the monitor tests' synthetic population."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES)))
    truth = (x[:, 0] + 0.3 * rng.normal(size=rows) > 0).astype(int)
    seen = x[:, 0] + NOISE[version] * rng.normal(size=rows)
    return x, 1 / (1 + np.exp(-SLOPE[version] * seen)), truth


def _registered(version: int) -> Envelope:
    """v``version`` with a reference profile that carries a calibration fitted on held-out scores and labels."""
    _, held_scores, held_truth = _rows(version, 5000, seed=100 + version)
    body = reference().to_dict()
    body["calibration"] = calibration_dict(held_scores, held_truth)
    return make_event(
        ModelVersionRegistered(
            model="m",
            version=version,
            source="manual",
            artifact_digest=sha(f"m{version}"),
            artifact_uri=f"file:///a/m/{version}",
            artifact_format="json",
            reference_profile=body,
            reference_profile_digest=sha(orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()),
        ),
        source="vigil://test",
        actor="svc:test",
    )


def _batch(version: int, variant: str, at: datetime, rows: int, seed: int) -> tuple[Envelope, list[str], np.ndarray]:
    x, scores, truth = _rows(version, rows, seed)
    ids = [uuid.uuid4().hex for _ in range(rows)]
    payload = PredictionLogged(
        deployment="est",
        model="m",
        version=version,
        variant=variant,
        first_at=at,
        last_at=at,
        prediction_ids=ids,
        numeric={name: x[:, j].tolist() for j, name in enumerate(FEATURES)},
        categorical={"region": ["north"] * rows},
        outputs=(scores >= 0.5).astype(float).tolist(),
        scores=scores.tolist(),
        latency_ms=[20.0] * rows,
    )
    return make_event(payload, source="vigil://gateway", actor="svc:deployer"), ids, truth


async def _of_type(mon: Any, kind: str) -> list[dict[str, Any]]:
    return [e for e in await mon.monitoring_events() if e["type"] == kind and e["data"]["deployment"] == "est"]


async def test_worse_canary_is_rolled_back_on_its_estimate_before_labels(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        policy = {"actions": {"on_estimated": "rollback"}}
        put = await mon.client.put("/v1/policies/est", json=policy, headers=mon.h("deployer"))
        assert put.status_code == 200 and put.json()["policy"]["actions"]["on_estimated"] == "rollback"
        bad = {"actions": {"on_estimated": "sometimes"}}
        assert (await mon.client.put("/v1/policies/est", json=bad, headers=mon.h("deployer"))).status_code == 422
        await mon.publish(topics.MODELS, _registered(1), _registered(2), key="m")

        async def both_stored() -> bool:  # models and predictions are separate topics: the profiles must be in first
            rows = await mon.fetch("SELECT count(*) AS n FROM reference_profiles WHERE model = 'm'")
            return rows[0]["n"] == 2

        await eventually(both_stored, timeout=60, what="reference profiles stored")
        at = window_start(time.time(), settings.window_s, ahead=2)
        stable, _, _ = _batch(1, "stable", at, 1000, seed=1)
        cand, c_ids, c_truth = _batch(2, "candidate", at, 1000, seed=2)
        await mon.publish(topics.PREDICTIONS, stable, cand, key="est")

        # Generous: the window must close behind its watermark first, and four test workers share two cores.
        rollbacks = await eventually(lambda: _of_type(mon, "rollback.requested"), timeout=150, what="rollback")
        r = rollbacks[0]["data"]
        assert r["reason"] == "candidate_worse" and r["candidate_version"] == 2 and r["stable_version"] == 1
        assert "label-free estimate" in r["detail"]
        ev = {e["statistic"]: e for e in r["evidence"]}
        drop = ev["estimated.accuracy.drop"]
        assert drop["breached"] and drop["value"] > 0.02 and drop["sample_size"] == 1000
        verdict = (await _of_type(mon, "analysis.verdict"))[0]["data"]
        assert verdict["verdict"] == "Failed" and "label-free estimate" in verdict["reason"]

        # the API's windows carry the estimate, no realised figure yet (no label was published)
        page = (await mon.client.get("/v1/windows?deployment=est&kind=tumbling", headers=mon.h("viewer"))).json()
        est = {w["figures"]["version"]: w["figures"]["estimated"] for w in page["items"]}
        assert est[1]["count"] == 1000 and est[2]["count"] == 1000 and est[2]["labelled"] == 0
        acc1, acc2 = est[1]["metrics"]["accuracy"], est[2]["metrics"]["accuracy"]
        assert acc2["upper"] < acc1["value"] and acc2["realised"] is None
        health = (await mon.client.get("/v1/deployments/est/health", headers=mon.h("viewer"))).json()
        assert {v["version"]: v["estimated"]["count"] for v in health["versions"]} == {1: 1000, 2: 1000}
        shown = {row[1]: row for row in window_rows(page["items"])}  # what `vigil monitor show est` prints
        assert shown[2][5].startswith(f"{acc2['value']:.4f} [") and shown[2][6] is None
        events = [e["data"] for e in await _of_type(mon, "monitor.window") if e["data"]["window"]["kind"] == "tumbling"]
        assert {e["version"]: e["estimated"]["metrics"]["accuracy"]["value"] for e in events} == {
            1: pytest.approx(acc1["value"]),
            2: pytest.approx(acc2["value"]),
        }

        # labels arrive late: the window is revised, and the realised accuracy sits beside the estimate
        await mon.publish(topics.LABELS, *labels("est", c_ids, c_truth), key="est")

        async def revised() -> dict[str, Any] | None:
            rows = await mon.fetch(
                "SELECT figures FROM windows WHERE kind = 'tumbling' AND version = 2 AND labels = 1000"
            )
            return rows[0]["figures"]["estimated"] if rows else None

        after = await eventually(revised, timeout=60, what="revised candidate window")
        realised = after["metrics"]["accuracy"]["realised"]
        _, scores, _ = _rows(2, 1000, seed=2)
        assert after["labelled"] == 1000
        assert realised == pytest.approx(float(np.mean((scores >= 0.5) == (c_truth == 1))))
        assert after["metrics"]["accuracy"]["value"] == pytest.approx(acc2["value"])  # the estimate is kept
        assert abs(realised - acc2["value"]) < 0.05  # and it was right: calibrated on the version's own held-out rows
        assert len(await _of_type(mon, "rollback.requested")) == 1
        page = (await mon.client.get("/v1/windows?deployment=est&kind=tumbling", headers=mon.h("viewer"))).json()
        shown = {row[1]: row for row in window_rows([w for w in page["items"] if w["figures"]["labels"]])}
        assert shown[2][6] == f"{realised:.4f}"
