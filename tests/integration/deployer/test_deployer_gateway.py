"""The serving gateway: a restart serves the same versions from stored state; bad inputs are refused with a reason."""

from __future__ import annotations

import pytest
from deployer_support import Deployer, StartDeployer, linear, row

from support.services import eventually
from vigil.deployer.gateway import ModelCache

pytestmark = pytest.mark.integration


async def start_canary_at_50(deployer: Deployer) -> None:
    await deployer.create(
        name="eta",
        model="eta-model",
        auto_deploy="auto",
        steps=[{"kind": "set_weight", "weight": 50}, {"kind": "pause"}],
    )
    await deployer.register_version("eta-model", 1, linear(0.4))
    await deployer.wait_for("eta", "v1 serving", lambda d: d["stable_version"] == 1)
    await deployer.register_version("eta-model", 2, linear(-0.4))
    await deployer.wait_for("eta", "canary at 50%", lambda d: d["weights"]["candidate"] == 50)


async def test_restart_serves_the_same_versions(start_deployer: StartDeployer) -> None:
    keys = [f"customer-{i}" for i in range(40)]
    async with start_deployer() as deployer:
        await start_canary_at_50(deployer)
        before_state = await deployer.get("eta")
        before = {k: (await deployer.predict("eta", {"features": row(1), "key": k}))["version"] for k in keys}
        assert set(before.values()) == {1, 2}  # both versions serve, each key sticks to one
        # Sticky: asking again gives the same version.
        assert before == {k: (await deployer.predict("eta", {"features": row(2), "key": k}))["version"] for k in keys}

    async with start_deployer() as deployer:  # a new process: nothing in memory, everything from Postgres
        assert deployer.service.runtime.parts.get(ModelCache).cached(before_state["model"]) is None
        after_state = await deployer.get("eta")
        for field in ("stable_version", "candidate_version", "weights", "mirror"):
            assert after_state[field] == before_state[field]
        assert after_state["rollout"]["id"] == before_state["rollout"]["id"]
        after = {k: (await deployer.predict("eta", {"features": row(1), "key": k}))["version"] for k in keys}
        assert after == before


async def test_bad_inputs_get_4xx_with_a_reason(deployer: Deployer) -> None:
    await deployer.create(name="bmi", model="bmi-model", auto_deploy="auto")
    r = await deployer.client.post(
        "/v1/deployments/bmi/predict", json={"features": row(0)}, headers=deployer.h("predictor")
    )
    assert r.status_code == 409 and "serves no version" in r.json()["detail"]
    await deployer.register_version("bmi-model", 1, linear(0.5))
    await deployer.wait_for("bmi", "v1 serving", lambda d: d["stable_version"] == 1)

    good = await deployer.predict("bmi", {"instances": [row(i) for i in range(3)]})
    assert len(good["predictions"]) == 3 and len({p["prediction_id"] for p in good["predictions"]}) == 3
    columns = {f: [row(i)[f] for i in range(4)] for f in row(0)}
    assert len((await deployer.predict("bmi", {"columns": columns}))["predictions"]) == 4

    url, predictor = "/v1/deployments/bmi/predict", deployer.h("predictor")
    cases: list[tuple[object, int, str]] = [
        ({"features": {"age": 40.0, "bmi": 22.0}}, 422, "missing features ['heart_rate']"),
        ({"features": {**row(0), "zip": 90210}}, 422, "unknown features ['zip']"),
        ({"features": {**row(0), "age": None}}, 422, "'age' must be a number"),
        ({"features": {**row(0), "age": "forty"}}, 422, "must be a number, got str"),
        ({"instances": [row(i) for i in range(301)]}, 413, "301 rows exceeds the limit of 300"),
        ({"instances": []}, 422, "no rows"),
        ({"features": row(0), "instances": [row(1)]}, 422, "exactly one of"),
        ({}, 422, "exactly one of"),
    ]
    for body, code, message in cases:
        r = await deployer.client.post(url, json=body, headers=predictor)
        assert r.status_code == code, (body, r.text)
        assert message in str(r.json()["detail"]), r.text
    # NaN and Infinity are not JSON; sent anyway (as Python's json writes them), they are refused too.
    for raw, message in (
        (b'{"features": {"age": NaN, "bmi": 1.0, "heart_rate": 60.0}}', "'age' must be finite"),
        (
            b'{"instances": [{"age": 1, "bmi": 1, "heart_rate": 1}, {"age": 1, "bmi": Infinity, "heart_rate": 1}]}',
            "row 1: feature 'bmi' must be finite",
        ),
    ):
        r = await deployer.client.post(url, content=raw, headers={**predictor, "Content-Type": "application/json"})
        assert r.status_code == 422 and message in r.json()["detail"], r.text
    # Unknown deployment; hostile names; roles (only predictors send production traffic: issue #20 item 5).
    assert (
        await deployer.client.post("/v1/deployments/nope/predict", json={"features": row(0)}, headers=predictor)
    ).status_code == 404
    r = await deployer.client.post("/v1/deployments/..%2Fetc/predict", json={"features": row(0)}, headers=predictor)
    assert r.status_code in (404, 422)
    roles = {"viewer": 403, "scientist": 403, "deployer": 403, "risk": 403, "auditor": 403, "nobody": 403}
    for role, code in (*roles.items(), ("predictor", 200), ("admin", 200)):
        r = await deployer.client.post(url, json={"features": row(0)}, headers=deployer.h(role))
        assert r.status_code == code, role
    assert (await deployer.client.post(url, json={"features": row(0)})).status_code == 401

    # Deployment creation refuses plans that cannot run, unknown versions and duplicates.
    d = deployer.h("deployer")
    bad_plans = [
        {"name": "x1", "model": "bmi-model", "strategy": "blue_green", "steps": [{"kind": "set_weight", "weight": 5}]},
        {"name": "x2", "model": "bmi-model", "steps": [{"kind": "set_weight", "weight": 0}]},
        {"name": "x3", "model": "bmi-model", "stable_version": 99},
    ]
    for body in bad_plans:
        r = await deployer.client.post("/v1/deployments", json=body, headers=d)
        assert r.status_code == 422, body
    r = await deployer.client.post("/v1/deployments", json={"name": "bmi", "model": "bmi-model"}, headers=d)
    assert r.status_code == 409
    assert (
        await deployer.client.post("/v1/deployments", json={"name": "y", "model": "m"}, headers=predictor)
    ).status_code == 403

    # Nothing above broke the service or dead-lettered anything.
    assert (await deployer.client.get("/readyz")).status_code == 200

    async def dlq_empty() -> bool:
        return (await deployer.client.get("/v1/dlq", headers=deployer.h("viewer"))).json()["items"] == []

    assert await eventually(dlq_empty, what="no dead letters")
