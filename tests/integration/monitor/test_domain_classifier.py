"""The domain classifier's second opinion on closed windows, through the real broker and Postgres.

Each version's reference profile is built by the trainer's own code (``reference_profile_dict``), so it carries the
PCA reference with the seeded sample of reference rows the classifier compares with. The monitor keeps a uniform
sample of each window's rows in the window state, batch by batch, and runs the classifier when the window closes:

- ``dcb`` serves rows whose first two features' correlation is flipped (NannyML's "butterfly": every marginal is
  the reference's): the AUROC is far above 0.5, in the figures, the API, ``monitor.window`` and ``vigil monitor
  show``; with ``drift.domain_classifier`` on, ``drift.detected`` names ``domain_classifier`` with the AUROC as
  evidence;
- ``dcc`` serves clean rows: AUROC near 0.5, not drifted, no decision under the same policy;
- ``dcs`` serves too few rows for a sample worth a classifier: ``auroc`` is null and the reason says so.
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
from vigil.monitor.domain import MIN_ROWS
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
    assert body["multivariate"]["pca"]["sample_rows"] > 0
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


async def test_butterfly_window_is_told_apart_clean_is_not_small_says_why(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        on = {"drift": {"domain_classifier": True}}
        for dep in ("dcb", "dcc"):
            put = await mon.client.put(f"/v1/policies/{dep}", json=on, headers=mon.h("deployer"))
            assert put.status_code == 200 and put.json()["policy"]["drift"]["domain_classifier"] is True
        await mon.publish(topics.MODELS, _registered("mdb"), _registered("mdc"), key="m")
        stored = (
            "SELECT count(*) AS n FROM reference_profiles WHERE model IN ('mdb', 'mdc') AND profile ? 'multivariate'"
        )

        async def both_stored() -> bool:
            return (await mon.fetch(stored))[0]["n"] == 2

        await eventually(both_stored, timeout=120, what="reference profiles stored")
        at = window_start(time.time(), settings.window_s, ahead=2)
        butterfly = _population(2400, seed=2, flip=True)
        clean = _population(2400, seed=3)
        for lo in (0, 1200):  # two batches each: the window's sample is folded across them
            await mon.publish(topics.PREDICTIONS, _batch("dcb", "mdb", at, butterfly[lo : lo + 1200]), key="dcb")
            await mon.publish(topics.PREDICTIONS, _batch("dcc", "mdc", at, clean[lo : lo + 1200]), key="dcc")
        await mon.publish(topics.PREDICTIONS, _batch("dcs", "mdc", at, clean[: MIN_ROWS // 2]), key="dcs")

        async def window(dep: str) -> dict[str, Any] | None:
            page = (await mon.client.get(f"/v1/windows?deployment={dep}&kind=tumbling", headers=mon.h("viewer"))).json()
            return page if page["items"] else None

        pages = {dep: await eventually(lambda d=dep: window(d), timeout=120, what=f"{dep} window") for dep in
                 ("dcb", "dcc", "dcs")}  # fmt: skip
        figs = {dep: page["items"][0]["figures"] for dep, page in pages.items()}
        b = figs["dcb"]["multivariate"]["domain_classifier"]
        c = figs["dcc"]["multivariate"]["domain_classifier"]
        s = figs["dcs"]["multivariate"]["domain_classifier"]
        assert b["auroc"] > 0.75 and b["drifted"] is True and b["z"] > 10 and b["auroc"] > b["upper"]
        assert b["n_window"] == 1000 and b["window_rows"] == 2400 and b["n_reference"] >= 1000
        for name, f in figs["dcb"]["features"].items():  # each feature alone looks like the reference
            assert f["test_pvalue"] is None or f["test_pvalue"] > 0.001, name
        assert abs(c["auroc"] - 0.5) < 0.05 and c["drifted"] is False and c["lower"] < 0.5 < c["upper"]
        assert s["auroc"] is None and s["drifted"] is None and s["n_window"] == MIN_ROWS // 2
        assert "fewer than" in s["reason"]

        drift = await eventually(lambda: _of_type(mon, "drift.detected", "dcb"), timeout=120, what="drift.detected")
        d = drift[0]["data"]
        assert d["features"] == ["domain_classifier"]  # the per-feature tests saw nothing; multivariate is off
        ev = d["evidence"][0]
        assert ev["statistic"] == "multivariate.domain_classifier_auroc" and ev["operator"] == "gt"
        assert ev["value"] == pytest.approx(b["auroc"]) and ev["sample_size"] == 1000 and ev["value"] > ev["threshold"]
        assert not await _of_type(mon, "drift.detected", "dcc")

        health = (await mon.client.get("/v1/deployments/dcb/health", headers=mon.h("viewer"))).json()
        assert health["versions"][0]["multivariate"]["domain_classifier"]["auroc"] == pytest.approx(b["auroc"])
        assert health["versions"][0]["drifted_features"] == ["domain_classifier"]
        events = {
            e["data"]["deployment"]: e["data"] for e in await mon.monitoring_events() if e["type"] == "monitor.window"
        }
        assert events["dcb"]["multivariate"]["domain_classifier"]["auroc"] == pytest.approx(b["auroc"])
        assert events["dcc"]["multivariate"]["domain_classifier"]["drifted"] is False
        assert events["dcs"]["multivariate"]["domain_classifier"]["reason"] == s["reason"]
        row = window_rows(pages["dcb"]["items"])[0]  # what `vigil monitor show dcb` prints
        assert row[COLUMNS.index("domain AUROC")] == f"{b['auroc']:.3f} (band ≤ {b['upper']:.3f}) *"
