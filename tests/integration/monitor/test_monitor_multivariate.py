"""Multivariate drift and out-of-distribution rows through the real broker and Postgres.

Each version's reference profile is built by the trainer's own code (``reference_profile_dict``), so it carries the
PCA reference and OOD thresholds the trainer stores. One window per deployment:

- ``mvb`` serves rows whose first two features' correlation is flipped (NannyML's "butterfly"): every marginal is the
  reference's, so no feature drifts, while the multivariate reconstruction error leaves its band — and with
  ``drift.multivariate`` on, ``drift.detected`` names ``multivariate`` with the error and band as evidence;
- ``mvo`` serves clean rows plus 5 % of rows far out (8σ on one feature): the OOD share is reported (API, event,
  ``vigil monitor show``), well above the reference's own ≈ 1 %.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from monitor_support import monitor_settings, run_monitor, sha, tokens_in, window_start

from support.services import eventually
from vigil.cli.monitor import COLUMNS, window_rows
from vigil.events import Envelope, make_event, topics
from vigil.events.catalog.models import ModelVersionRegistered
from vigil.events.catalog.streams import PredictionLogged
from vigil.trainer.profiling import reference_profile_dict

pytestmark = pytest.mark.integration

NAMES = ["a", "b", "c", "d"]


def _population(rows: int, seed: int, flip: bool = False) -> np.ndarray:
    """Four standard-normal features; ``a`` and ``b`` correlated at +0.9 (``flip``: −0.9 — same marginals)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    x[:, 1] = (-0.9 if flip else 0.9) * x[:, 0] + np.sqrt(1 - 0.81) * x[:, 1]
    return x


def _registered(model: str) -> Envelope:
    body = reference_profile_dict(_population(20_000, seed=0), NAMES)
    assert "multivariate" in body
    return make_event(
        ModelVersionRegistered(
            model=model,
            version=1,
            source="manual",
            artifact_digest=sha(model),
            artifact_uri=f"file:///a/{model}/1",
            artifact_format="json",
            reference_profile=body,
            reference_profile_digest=sha(orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()),
        ),
        source="vigil://test",
        actor="svc:test",
    )


def _batch(deployment: str, model: str, at: datetime, x: np.ndarray) -> Envelope:
    rows = x.shape[0]
    scores = 1 / (1 + np.exp(-x[:, 0]))
    payload = PredictionLogged(
        deployment=deployment,
        model=model,
        version=1,
        variant="stable",
        first_at=at,
        last_at=at,
        prediction_ids=[uuid.uuid4().hex for _ in range(rows)],
        numeric={name: x[:, j].tolist() for j, name in enumerate(NAMES)},
        outputs=(scores >= 0.5).astype(float).tolist(),
        scores=scores.tolist(),
        latency_ms=[5.0] * rows,
    )
    return make_event(payload, source="vigil://gateway", actor="svc:deployer")


async def _of_type(mon: Any, kind: str, deployment: str) -> list[dict[str, Any]]:
    return [e for e in await mon.monitoring_events() if e["type"] == kind and e["data"]["deployment"] == deployment]


async def test_butterfly_is_multivariate_drift_and_far_rows_are_ood(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        on = {"drift": {"multivariate": True}}
        put = await mon.client.put("/v1/policies/mvb", json=on, headers=mon.h("deployer"))
        assert put.status_code == 200 and put.json()["policy"]["drift"]["multivariate"] is True
        bad = {"drift": {"multivariate": "maybe"}}
        assert (await mon.client.put("/v1/policies/mvb", json=bad, headers=mon.h("deployer"))).status_code == 422
        await mon.publish(topics.MODELS, _registered("mb"), _registered("mo"), key="m")
        stored = "SELECT count(*) AS n FROM reference_profiles WHERE model IN ('mb', 'mo') AND profile ? 'multivariate'"

        async def both_stored() -> bool:
            return (await mon.fetch(stored))[0]["n"] == 2

        await eventually(both_stored, timeout=60, what="reference profiles stored")
        at = window_start(time.time(), settings.window_s, ahead=2)
        far = _population(2000, seed=3)
        far[:100, 2] = 8.0  # 5 % of the rows: 8σ out on one feature
        butterfly = _population(2000, seed=2, flip=True)
        await mon.publish(topics.PREDICTIONS, _batch("mvb", "mb", at, butterfly[:1000]), key="mvb")
        await mon.publish(topics.PREDICTIONS, _batch("mvb", "mb", at, butterfly[1000:]), key="mvb")
        await mon.publish(topics.PREDICTIONS, _batch("mvo", "mo", at, far), key="mvo")

        async def windows(dep: str) -> dict[str, Any] | None:
            page = (await mon.client.get(f"/v1/windows?deployment={dep}&kind=tumbling", headers=mon.h("viewer"))).json()
            return page if page["items"] else None

        b_page = await eventually(lambda: windows("mvb"), timeout=60, what="mvb window")
        o_page = await eventually(lambda: windows("mvo"), timeout=60, what="mvo window")
        b = b_page["items"][0]["figures"]
        mv = b["multivariate"]
        assert mv is not None
        assert mv["count"] == 2000 and mv["drifted"] is True and mv["error"] > mv["upper"]
        for name, f in b["features"].items():  # each feature alone looks like the reference
            assert f["test_pvalue"] is None or f["test_pvalue"] > 0.001, name
        o = o_page["items"][0]["figures"]["multivariate"]
        assert o["ood_count"] == 2000 and o["ood_flagged"] >= 100
        assert o["ood_share"] == pytest.approx(o["ood_flagged"] / 2000)
        assert o["ood_share"] > 4 * o["ood_reference_share"]
        assert not (await _of_type(mon, "drift.detected", "mvo"))  # default policy: multivariate off

        drift = await eventually(lambda: _of_type(mon, "drift.detected", "mvb"), timeout=60, what="drift.detected")
        d = drift[0]["data"]
        assert d["features"] == ["multivariate"]  # no single feature drifted: the marginals are the reference's
        ev = d["evidence"][0]
        assert ev["statistic"] == "multivariate.reconstruction_error" and ev["operator"] == "gt"
        assert ev["value"] > ev["threshold"] and ev["sample_size"] == 2000

        health = (await mon.client.get("/v1/deployments/mvb/health", headers=mon.h("viewer"))).json()
        assert health["versions"][0]["drifted_features"] == ["multivariate"]
        assert health["versions"][0]["multivariate"]["error"] == pytest.approx(mv["error"])
        row = window_rows(o_page["items"])[0]  # what `vigil monitor show mvo` prints
        assert row[COLUMNS.index("OOD share")].startswith(f"{100 * o['ood_share']:.2f} %")
        events = {
            e["data"]["deployment"]: e["data"] for e in await mon.monitoring_events() if e["type"] == "monitor.window"
        }
        assert events["mvb"]["multivariate"]["drifted"] is True
        assert events["mvo"]["multivariate"]["ood_flagged"] == o["ood_flagged"]
