"""training.completed through the real broker → gates → model.version.registered / .rejected with evidence;
duplicates create nothing twice; versions are immutable; manual registration goes through the same gates."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from registry_support import Registry, training_completed

from support.services import eventually
from vigil.events import make_event
from vigil.events.catalog.training import TrainingCompleted

pytestmark = pytest.mark.integration

GATES = {
    "gates": [
        {"name": "auc_floor", "kind": "metric_floor", "metric": "auc", "threshold": 0.8},
        {"name": "auc_regression", "kind": "max_regression", "metric": "auc", "threshold": 0.02},
        {"name": "dp_gap", "kind": "fairness_gap", "metric": "fairness:dp_gap:sex", "threshold": 0.1},
        {"name": "input_schema", "kind": "schema_compat"},
    ]
}


async def test_training_completed_registered_rejected_and_deduplicated(registry: Registry) -> None:
    client = registry.client
    dataset = await registry.register_dataset("patients", "a", [{"name": "age", "type": "float"}])

    r = await client.put("/v1/models/churn/gates", json=GATES, headers=registry.h("risk"))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2  # version 1 is the default policy the model was created with

    good = training_completed("churn", "run-1", metrics={"auc": 0.91, "fairness:dp_gap:sex": 0.04}, datasets=[dataset])
    # The same event twice (a redelivery) and the same run under a new event id (a duplicate from the producer).
    duplicate = make_event(TrainingCompleted(**good.data), source="vigil://trainer", actor="service:trainer")
    await registry.publish("vigil.training", good, good, duplicate, key="churn")

    async def decided(n: int) -> list[dict[str, Any]]:
        resp = await client.get("/v1/models/churn/candidates", headers=registry.h("viewer"))
        items: list[dict[str, Any]] = resp.json()["items"]
        return items if len(items) >= n else []

    await eventually(lambda: decided(1), timeout=20, what="run-1 decided")
    v1 = (await client.get("/v1/models/churn/versions/1", headers=registry.h("viewer"))).json()
    assert v1["source"] == "training"
    assert v1["run_id"] == "run-1"
    assert v1["metrics"]["auc"] == 0.91
    assert v1["gate_policy_version"] == 2
    assert [g["gate"] for g in v1["gates"]] == ["auc_floor", "auc_regression", "dp_gap", "input_schema"]
    assert all(g["passed"] for g in v1["gates"])
    assert v1["source_event_id"] == good.id
    assert v1["datasets"][0]["dataset"] == "patients"

    # The champion is v1; the next runs are judged against it.
    r = await client.put("/v1/models/churn/aliases/champion", json={"version": 1}, headers=registry.h("deployer"))
    assert r.status_code == 200, r.text

    regressed = training_completed(
        "churn", "run-2", metrics={"auc": 0.86, "fairness:dp_gap:sex": 0.04}, datasets=[dataset]
    )
    unfair_and_incompatible = training_completed(
        "churn",
        "run-3",
        metrics={"auc": 0.95, "fairness:dp_gap:sex": -0.2},
        datasets=[dataset],
        signature={"age": "float", "glucose": "float"},
    )
    await registry.publish("vigil.training", regressed, unfair_and_incompatible, key="churn")
    candidates = await eventually(lambda: decided(3), timeout=20, what="run-2 and run-3 decided")
    by_run = {c["run_id"]: c for c in candidates}
    assert [by_run[r]["outcome"] for r in ("run-1", "run-2", "run-3")] == ["registered", "rejected", "rejected"]

    gates2 = {g["gate"]: g for g in by_run["run-2"]["gates"]}
    assert gates2["auc_regression"]["passed"] is False
    assert gates2["auc_regression"]["baseline"] == 0.91
    assert gates2["auc_regression"]["baseline_version"] == 1
    assert gates2["auc_regression"]["value"] == pytest.approx(0.05)
    assert gates2["auc_floor"]["passed"] is True
    assert "auc_regression" in by_run["run-2"]["reason"]
    gates3 = {g["gate"]: g for g in by_run["run-3"]["gates"]}
    assert gates3["dp_gap"]["passed"] is False
    assert gates3["dp_gap"]["value"] == pytest.approx(0.2)
    assert gates3["input_schema"]["passed"] is False
    assert "glucose" in gates3["input_schema"]["detail"]

    # Exactly one version and one decision per run, whatever was delivered how often.
    assert await registry.fetchval("SELECT count(*) FROM model_versions WHERE model = 'churn'") == 1
    assert await registry.fetchval("SELECT count(*) FROM candidates WHERE model = 'churn'") == 3
    rejected = await client.get(
        "/v1/models/churn/candidates", params={"outcome": "rejected"}, headers=registry.h("viewer")
    )
    assert [c["run_id"] for c in rejected.json()["items"]] == ["run-2", "run-3"]

    # The decisions went out on vigil.models, linked to the training events that caused them.
    events = await registry.events_on("vigil.models", expect=4)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_type.setdefault(e["type"], []).append(e)
    assert len(by_type["model.version.registered"]) == 1
    assert len(by_type["model.version.rejected"]) == 2
    assert len(by_type["model.alias.changed"]) == 1
    registered = by_type["model.version.registered"][0]
    assert registered["causationid"] == good.id
    assert registered["id"] == v1["registered_event_id"]
    assert registered["data"]["gate_policy_version"] == 2
    assert registered["subject"] == "model/churn/v1"
    rejected_events = {e["data"]["run_id"]: e for e in by_type["model.version.rejected"]}
    assert rejected_events["run-2"]["causationid"] == regressed.id
    evidence = {g["gate"]: g for g in rejected_events["run-2"]["data"]["gates"]}
    assert evidence["auc_regression"]["baseline"] == 0.91

    # Versions are immutable, even to SQL.
    with pytest.raises(asyncpg.RaiseError, match="immutable"):
        await registry.fetchval("UPDATE model_versions SET description = 'x' WHERE model = 'churn'")
    with pytest.raises(asyncpg.RaiseError, match="immutable"):
        await registry.fetchval("DELETE FROM model_versions WHERE model = 'churn'")

    # Nothing was dead-lettered.
    assert (await client.get("/v1/dlq", headers=registry.h("viewer"))).json()["items"] == []


async def test_manual_registration_goes_through_the_gates(registry: Registry) -> None:
    client = registry.client
    sci = registry.h("scientist")

    async def upload(content: bytes) -> str:
        r = await client.post("/v1/artifacts", params={"format": "json"}, content=content, headers=sci)
        assert r.status_code == 201, r.text
        digest: str = r.json()["digest"]
        return digest

    # Not uploaded → refused.
    r = await client.post("/v1/models/fraud/versions", json={"artifact_digest": "sha256:" + "0" * 64}, headers=sci)
    assert r.status_code == 422
    assert "upload it" in r.json()["detail"]

    first = await upload(b'{"weights": [1, 2, 3]}')
    body = {
        "artifact_digest": first,
        "metrics": {"auc": 0.9},
        "signature": [{"name": "amount", "type": "float"}],
        "tags": {"team": "risk"},
        "description": "hand-trained baseline",
    }
    r = await client.post("/v1/models/fraud/versions", json=body, headers=sci)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1
    assert r.json()["source"] == "manual"
    assert r.json()["artifact_format"] == "json"
    assert r.json()["artifact_uri"] == f"vigil-artifact://{first}"

    # The same artifact again → 409 naming the version; viewers cannot register.
    assert (await client.post("/v1/models/fraud/versions", json=body, headers=sci)).status_code == 409
    viewer_try = await client.post("/v1/models/fraud/versions", json=body, headers=registry.h("viewer"))
    assert viewer_try.status_code == 403

    # A floor the next version misses → 422 with every gate's result, and the rejection is recorded.
    floor = {"gates": [{"name": "auc_floor", "kind": "metric_floor", "metric": "auc", "threshold": 0.95}]}
    assert (await client.put("/v1/models/fraud/gates", json=floor, headers=sci)).status_code == 403  # not theirs
    assert (await client.put("/v1/models/fraud/gates", json=floor, headers=registry.h("deployer"))).status_code == 200
    second = await upload(b'{"weights": [4, 5, 6]}')
    r = await client.post("/v1/models/fraud/versions", json={**body, "artifact_digest": second}, headers=sci)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail["gate_policy_version"] == 2
    assert detail["gates"] == [
        {
            "gate": "auc_floor",
            "kind": "metric_floor",
            "metric": "auc",
            "value": 0.9,
            "threshold": 0.95,
            "baseline": None,
            "baseline_version": None,
            "passed": False,
            "detail": "0.9 < 0.95",
        }
    ]
    rejected = (await client.get("/v1/models/fraud/candidates?outcome=rejected", headers=sci)).json()["items"]
    assert len(rejected) == 1
    assert rejected[0]["decision_event_id"] == detail["decision_event_id"]
    events = await registry.events_on("vigil.models", expect=3)
    # The gate change itself is audited too (issue #20 item 5), between the two decisions.
    assert sorted(e["type"] for e in events) == [
        "model.version.registered",
        "model.version.rejected",
        "policy.gates.changed",
    ]

    # Invalid gate policies are refused with the reason.
    bad = {"gates": [{"name": "g", "kind": "metric_floor", "metric": "auc"}]}
    r = await client.put("/v1/models/fraud/gates", json=bad, headers=registry.h("risk"))
    assert r.status_code == 422
    history = (await client.get("/v1/models/fraud/gates/versions", headers=sci)).json()["items"]
    assert [p["version"] for p in history] == [1, 2]
