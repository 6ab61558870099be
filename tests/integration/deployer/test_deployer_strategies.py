"""Shadow and blue-green rollouts through the real broker and Postgres."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from deployer_support import FEATURES, Deployer, linear, row

from support.services import eventually
from vigil.deployer.gateway import ModelCache
from vigil.events import topics

pytestmark = pytest.mark.integration


async def create_with_stable(deployer: Deployer, name: str, model: str, **body: Any) -> dict[str, Any]:
    """Create a deployment serving v1 (retrying until the consumer has seen v1's registration)."""

    async def attempt() -> dict[str, Any] | None:
        r = await deployer.client.post(
            "/v1/deployments",
            json={"name": name, "model": model, "stable_version": 1, **body},
            headers=deployer.h("deployer"),
        )
        return dict(r.json()) if r.status_code == 201 else None

    created: dict[str, Any] = await eventually(attempt, what=f"{name} created on v1")
    return created


async def test_shadow_mirrors_traffic_and_clients_only_see_stable(deployer: Deployer) -> None:
    v1, v2 = linear(0.7), linear(-1.1, intercept=0.4)
    await deployer.register_version("risk-model", 1, v1)
    await deployer.register_version("risk-model", 2, v2)
    await create_with_stable(deployer, "risk", "risk-model", strategy="shadow", steps=[{"kind": "analysis"}])
    r = await deployer.client.post("/v1/deployments/risk/rollouts", json={"version": 2}, headers=deployer.h("deployer"))
    assert r.status_code == 201, r.text
    dep = r.json()
    assert dep["mirror"] is True and dep["weights"] == {"stable": 100, "candidate": 0}

    answered: dict[str, float] = {}
    inputs: dict[str, dict[str, float]] = {}
    for i in range(20):  # single rows, sticky keys included: the key never reaches the shadow
        out = await deployer.predict("risk", {"features": row(i), "key": f"k{i}"})
        assert out["version"] == 1 and out["variant"] == "stable"
        answered[out["predictions"][0]["prediction_id"]] = out["predictions"][0]["score"]
        inputs[out["predictions"][0]["prediction_id"]] = row(i)
    batch = [row(100 + i) for i in range(25)]
    out = await deployer.predict("risk", {"instances": batch})
    assert out["version"] == 1 and len(out["predictions"]) == 25
    for p, x in zip(out["predictions"], batch, strict=True):
        answered[p["prediction_id"]] = p["score"]
        inputs[p["prediction_id"]] = x
    # What clients got is stable's answer.
    for pid, score in answered.items():
        expected = v1.predict_score(np.array([[inputs[pid][f] for f in FEATURES]]))[0]
        assert score == pytest.approx(expected)

    async def logged() -> dict[str, list[dict[str, Any]]] | None:
        batches = await deployer.events_on(topics.PREDICTIONS, expect=10_000, timeout=1.5)
        by_variant: dict[str, list[dict[str, Any]]] = {"stable": [], "shadow": [], "candidate": []}
        for b in batches:
            by_variant[b["data"]["variant"]].append(b["data"])
        rows = {v: sum(len(d["prediction_ids"]) for d in ds) for v, ds in by_variant.items()}
        return by_variant if rows["stable"] >= 45 and rows["shadow"] >= 45 else None

    by_variant = await eventually(logged, what="stable and shadow predictions logged")
    assert by_variant["candidate"] == []
    shadow_scores: dict[str, float] = {}
    for data in by_variant["shadow"]:
        assert data["version"] == 2
        shadow_scores.update(zip(data["prediction_ids"], data["scores"], strict=True))
    # The candidate saw every request (same prediction ids) and its own answers were logged, never returned.
    assert set(shadow_scores) == set(answered)
    for pid, score in shadow_scores.items():
        expected = v2.predict_score(np.array([[inputs[pid][f] for f in FEATURES]]))[0]
        assert score == pytest.approx(expected)
        assert score != pytest.approx(answered[pid])

    # A passed analysis switches all traffic at once; mirroring stops.
    rollout_id = dep["rollout"]["id"]
    await deployer.verdict("risk", "risk-model", "Successful", rollout_id=rollout_id, step_index=0, candidate_version=2)
    dep = await deployer.wait_for("risk", "promoted", lambda d: d["stable_version"] == 2)
    assert dep["mirror"] is False and dep["candidate_version"] is None
    assert await deployer.split("risk", 10) == {2: 10}


async def test_blue_green_warms_switches_at_once_and_rolls_back_instantly(deployer: Deployer) -> None:
    await deployer.register_version("price-model", 1, linear(0.2))
    v2 = await deployer.register_version("price-model", 2, linear(0.6))
    await deployer.register_version("price-model", 3, linear(0.9), stored=False)  # its artifact is missing
    await create_with_stable(deployer, "price", "price-model", strategy="blue_green")  # default: [pause]

    r = await deployer.client.post(
        "/v1/deployments/price/rollouts", json={"version": 2}, headers=deployer.h("deployer")
    )
    assert r.status_code == 201, r.text
    dep = r.json()
    # Warmed before any traffic: the artifact is loaded (verified) and answered a smoke prediction.
    assert deployer.service.runtime.parts.get(ModelCache).cached(v2.data["artifact_digest"]) is not None
    assert dep["rollout"]["pause_reason"] == "awaiting_approval" and dep["weights"]["candidate"] == 0
    assert await deployer.split("price", 10) == {1: 10}

    r = await deployer.client.post("/v1/deployments/price/resume", json={}, headers=deployer.h("deployer"))
    assert r.status_code == 200, r.text
    assert r.json()["stable_version"] == 2 and r.json()["previous_version"] == 1
    assert await deployer.split("price", 10) == {2: 10}

    # Instant rollback: the old version was kept; the switched-to one is marked failed.
    r = await deployer.client.post(
        "/v1/deployments/price/rollback", json={"reason": "conversion dropped"}, headers=deployer.h("deployer")
    )
    assert r.status_code == 200, r.text
    assert r.json()["stable_version"] == 1 and r.json()["previous_version"] is None
    assert await deployer.split("price", 10) == {1: 10}
    events = await deployer.deployment_events("deployment.rolled_back")
    rolled = next(e for e in events if e["type"] == "deployment.rolled_back")
    assert rolled["data"]["trigger"] == "api" and rolled["data"]["failed_version"] == 2
    assert rolled["actor"] == "user:test-deployer" and rolled["data"]["reason"] == "conversion dropped"

    # A candidate whose artifact cannot be loaded never gets traffic: the rollout aborts with the reason.
    r = await deployer.client.post(
        "/v1/deployments/price/rollouts", json={"version": 3}, headers=deployer.h("deployer")
    )
    assert r.status_code == 422 and "failed to warm" in r.json()["detail"]
    assert (await deployer.get("price"))["stable_version"] == 1
    events = await deployer.deployment_events("deployment.aborted")
    aborted = next(e for e in events if e["type"] == "deployment.aborted")
    assert "failed to warm" in aborted["data"]["reason"] and aborted["data"]["candidate_version"] == 3
