"""Per-request OOD flags (#21 item 4) through the real broker and Postgres: the gateway scores each answered row
against its version's reference profile and logs the flags in ``prediction.logged``; the monitor, running on the
same topics, counts the logged flags in its window's OOD share.

Three versions, one deployment each: the profile inline in ``model.version.registered`` (``oodi``), the profile
stored as an artifact and named by URI and digest (``oods``, as for a profile too large to travel inline), and no
profile at all (``oodn``: served as before, no flags, no error). Each request sends a typical row (the training
mean) and a row 50σ out on one feature, through the predict route (and once through the Open Inference Protocol).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import orjson
import pytest
from deployer_support import FEATURES, Deployer, linear, logged_payload, monitor_beside

from support.kafka import produce_events
from support.services import eventually
from vigil.artifacts import LocalArtifactStore
from vigil.events import make_event, topics
from vigil.events.catalog.models import ModelVersionRegistered
from vigil.trainer.profiling import reference_profile_dict

pytestmark = pytest.mark.integration

MEAN = np.array([50.0, 25.0, 70.0])
SD = np.array([10.0, 4.0, 12.0])
TYPICAL = dict(zip(FEATURES, MEAN.tolist(), strict=True))
FAR = {**TYPICAL, "age": float(MEAN[0] + 50 * SD[0])}  # 50σ out on age, the rest typical


def _profile() -> dict[str, Any]:
    """The trainer's reference profile of the training rows (age and heart rate correlated)."""
    z = np.random.default_rng(0).normal(size=(5000, 3))
    z[:, 2] = 0.7 * z[:, 0] + np.sqrt(1 - 0.49) * z[:, 2]
    body = reference_profile_dict(MEAN + z * SD, list(FEATURES))
    assert "multivariate" in body
    return body


async def _register(deployer: Deployer, model: str, *, profile: str) -> None:
    """What the registry announces for v1: the profile ``inline``, ``stored`` as an artifact, or ``none``."""
    artifacts = LocalArtifactStore(deployer.artifact_root)
    digest = artifacts.put(linear(0.4).to_bytes())
    fields: dict[str, Any] = {}
    if profile == "inline":
        body = _profile()
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        fields = {
            "reference_profile": body,
            "reference_profile_digest": "sha256:" + hashlib.sha256(canonical).hexdigest(),
        }
    elif profile == "stored":
        stored = artifacts.put(orjson.dumps(_profile()))
        fields = {"reference_profile_uri": f"vigil-artifact://{stored}", "reference_profile_digest": stored}
    event = make_event(
        ModelVersionRegistered(
            model=model,
            version=1,
            source="training",
            artifact_digest=digest,
            artifact_uri=f"vigil-artifact://{digest}",
            artifact_format="json",
            gate_policy_version=1,
            **fields,
        ),
        source="vigil://registry",
        actor="service:registry",
    )
    await produce_events(deployer.bootstrap, f"{deployer.prefix}{topics.MODELS}", [event], key=model.encode())


async def test_ood_flags_are_logged_per_row_and_counted_by_the_monitor(deployer: Deployer, fresh_db: str) -> None:
    async with monitor_beside(deployer, fresh_db) as monitor:
        for name, profile in (("oodi", "inline"), ("oods", "stored"), ("oodn", "none")):
            await deployer.create(name=name, model=f"{name}-model", auto_deploy="auto")
            await _register(deployer, f"{name}-model", profile=profile)
        for name in ("oodi", "oods", "oodn"):
            await deployer.wait_for(name, "v1 serving", lambda d: d["stable_version"] == 1)

        async def monitor_has_the_profile() -> bool:
            async with monitor.runtime.pool.acquire() as conn:
                n = await conn.fetchval("SELECT count(*) FROM reference_profiles WHERE model = 'oodi-model'")
            return bool(n)

        await eventually(monitor_has_the_profile, timeout=60, what="the monitor stored oodi's reference profile")

        for name in ("oodi", "oods"):
            answer = await deployer.predict(name, {"instances": [TYPICAL, FAR]})
            assert [p["ood"] for p in answer["predictions"]] == [False, True], name
            ids = [p["prediction_id"] for p in answer["predictions"]]
            data = await logged_payload(deployer, name, ids)
            flags = dict(zip(data["prediction_ids"], data["ood"], strict=True))
            scores = dict(zip(data["prediction_ids"], data["ood_scores"], strict=True))
            assert (flags[ids[0]], flags[ids[1]]) == (False, True)
            assert scores[ids[0]] < 1 < scores[ids[1]], scores  # multiples of the reference's thresholds

        # The Open Inference Protocol's requests are scored the same way (the flag is in the logged event only).
        data_rows = [TYPICAL[f] for f in FEATURES] + [FAR[f] for f in FEATURES]
        infer = {"inputs": [{"name": "features", "shape": [2, 3], "datatype": "FP64", "data": data_rows}]}
        r = await deployer.client.post("/v2/models/oods/infer", json=infer, headers=deployer.h("predictor"))
        assert r.status_code == 200, r.text
        request_id = r.json()["parameters"]["request_id"]
        data = await logged_payload(deployer, "oods", [f"{request_id}-0", f"{request_id}-1"])
        flags = dict(zip(data["prediction_ids"], data["ood"], strict=True))
        assert (flags[f"{request_id}-0"], flags[f"{request_id}-1"]) == (False, True)

        plain = await deployer.predict("oodn", {"instances": [TYPICAL, FAR]})  # no profile: no flag, no error
        assert [p["ood"] for p in plain["predictions"]] == [None, None]
        data = await logged_payload(deployer, "oodn", [p["prediction_id"] for p in plain["predictions"]])
        assert data.get("ood") is None and data.get("ood_scores") is None

        async def oodi_window() -> dict[str, Any] | None:
            r = await monitor.client.get("/v1/windows?deployment=oodi&kind=tumbling", headers=deployer.h("viewer"))
            items = r.json()["items"] if r.status_code == 200 else []
            mv = items[0]["figures"].get("multivariate") if items else None
            return mv if mv and mv["ood_count"] >= 2 else None

        mv = await eventually(oodi_window, timeout=60, what="oodi's closed window with its OOD share")
        # The one logged batch: two rows, the far one flagged by the gateway.
        assert (mv["ood_count"], mv["ood_flagged"], mv["ood_share"]) == (2, 1, 0.5)
