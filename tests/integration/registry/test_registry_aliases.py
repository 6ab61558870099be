"""Aliases through the API and the deployer's events; history answers "what was champion at T, who moved it,
caused by which event"; lineage runs from the dataset to the deployment."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest
from registry_support import Registry, training_completed

from support.services import eventually
from vigil.events import make_event
from vigil.events.catalog.deployments import (
    DeploymentCreated,
    DeploymentPromoted,
    DeploymentRolledBack,
    DeploymentRolloutStarted,
)

pytestmark = pytest.mark.integration


def deployer_event(payload: Any) -> Any:
    return make_event(payload, source="vigil://deployer", actor="service:deployer")


async def test_alias_history_deployments_and_lineage(registry: Registry) -> None:
    client = registry.client
    viewer, scientist, deployer = registry.h("viewer"), registry.h("scientist"), registry.h("deployer")
    dataset = await registry.register_dataset("patients", "a", [{"name": "age", "type": "float"}])

    # Three versions from three training runs (the default policy only checks schema compatibility).
    runs = [
        training_completed("churn", f"run-{i}", metrics={"auc": 0.8 + i / 100}, datasets=[dataset], job_id="job-7")
        for i in (1, 2, 3)
    ]
    await registry.publish("vigil.training", *runs, key="churn")

    async def three_versions() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await client.get("/v1/models/churn/versions", headers=viewer)).json()["items"]
        return items if len(items) == 3 else []

    await eventually(three_versions, timeout=20, what="three versions")

    # Roles: a scientist moves challenger but not champion; deployers and admins move champion.
    r = await client.put("/v1/models/churn/aliases/champion", json={"version": 1}, headers=scientist)
    assert r.status_code == 403
    assert "deployer" in r.json()["detail"]
    assert (await client.delete("/v1/models/churn/aliases/champion", headers=scientist)).status_code == 403
    assert (
        await client.put("/v1/models/churn/aliases/champion", json={"version": 1}, headers=viewer)
    ).status_code == 403
    r = await client.put("/v1/models/churn/aliases/challenger", json={"version": 2}, headers=scientist)
    assert r.status_code == 200, r.text
    assert (
        await client.put("/v1/models/churn/aliases/champion", json={"version": 9}, headers=deployer)
    ).status_code == 404

    before_any = datetime.now().astimezone()
    await asyncio.sleep(0.01)
    r = await client.put(
        "/v1/models/churn/aliases/champion", json={"version": 1, "reason": "first release"}, headers=deployer
    )
    assert r.status_code == 200, r.text
    set_at = r.json()["changed_at"]
    assert r.json()["actor"] == "user:test-deployer"
    # Setting it to where it already points changes nothing.
    again = await client.put("/v1/models/churn/aliases/champion", json={"version": 1}, headers=deployer)
    assert again.status_code == 200
    assert again.json() is None
    await asyncio.sleep(0.01)
    r = await client.put("/v1/models/churn/aliases/champion", json={"version": 2}, headers=registry.h("admin"))
    assert r.status_code == 200
    moved_at = r.json()["changed_at"]

    # The deployer rolls v3 out and promotes it → champion follows, caused by the promotion event.
    created = deployer_event(
        DeploymentCreated(deployment="churn-prod", model="churn", strategy="canary", stable_version=2)
    )
    started = deployer_event(
        DeploymentRolloutStarted(
            deployment="churn-prod",
            model="churn",
            rollout_id="ro-1",
            strategy="canary",
            stable_version=2,
            candidate_version=3,
            trigger="auto",
        )
    )
    promoted = deployer_event(
        DeploymentPromoted(
            deployment="churn-prod", model="churn", rollout_id="ro-1", version=3, previous_version=2, approved_by="ana"
        )
    )
    await registry.publish("vigil.deployments", created, started, promoted, key="churn-prod")

    async def champion_is(version: int | None) -> dict[str, Any] | None:
        resp = await client.get("/v1/models/churn/aliases/champion", headers=viewer)
        body: dict[str, Any] = resp.json()
        return body if resp.status_code == 200 and body["version"] == version else None

    now = await eventually(lambda: champion_is(3), timeout=20, what="champion promoted to v3")
    assert now["change"]["cause"] == "promotion"
    assert now["change"]["cause_event_id"] == promoted.id
    assert now["change"]["deployment"] == "churn-prod"
    assert now["change"]["actor"] == "service:deployer"
    assert "approved by ana" in now["change"]["reason"]

    # v3 fails in production: rollback restores champion to stable v2. A rollback of a version that is not
    # champion (v1 on a test endpoint) leaves champion where it is.
    rolled_back = deployer_event(
        DeploymentRolledBack(
            deployment="churn-prod",
            model="churn",
            rollout_id="ro-1",
            stable_version=2,
            failed_version=3,
            trigger="monitor",
            reason="auc dropped",
        )
    )
    unrelated = deployer_event(
        DeploymentRolledBack(
            deployment="churn-test", model="churn", stable_version=None, failed_version=1, trigger="api", reason="x"
        )
    )
    await registry.publish("vigil.deployments", rolled_back, key="churn-prod")
    await registry.publish("vigil.deployments", unrelated, key="churn-test")
    restored = await eventually(lambda: champion_is(2), timeout=20, what="champion restored to v2")
    assert restored["change"]["cause"] == "rollback"
    assert restored["change"]["cause_event_id"] == rolled_back.id
    assert restored["change"]["from_version"] == 3
    await eventually(
        lambda: registry.fetchval("SELECT count(*) FROM deployment_versions WHERE deployment = 'churn-test'"),
        what="the unrelated rollback applied",
    )
    assert (await champion_is(2)) is not None

    # A promotion of a version the registry never registered is refused loudly: dead-lettered, champion unmoved.
    bogus = deployer_event(DeploymentPromoted(deployment="churn-prod", model="churn", version=99, previous_version=2))
    await registry.publish("vigil.deployments", bogus, key="churn-prod")

    async def dead_letters() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await client.get("/v1/dlq", headers=viewer)).json()["items"]
        return items

    [letter] = await eventually(dead_letters, timeout=20, what="the bogus promotion dead-lettered")
    assert letter["event_id"] == bogus.id
    assert "has no version 99" in letter["error"]
    assert (await champion_is(2)) is not None

    # "What was champion at T?"
    async def at(when: str) -> Any:
        return await client.get("/v1/models/churn/aliases/champion", params={"at": when}, headers=viewer)

    assert (await at(before_any.isoformat())).status_code == 404
    at_set = (await at(set_at)).json()
    assert at_set["version"] == 1
    assert at_set["change"]["actor"] == "user:test-deployer"
    assert at_set["change"]["reason"] == "first release"
    assert at_set["change"]["cause_event_id"] is None
    assert (await at(moved_at)).json()["version"] == 2
    assert (await at(moved_at)).json()["change"]["actor"] == "user:test-admin"

    history = (await client.get("/v1/models/churn/aliases/champion/history", headers=viewer)).json()["items"]
    assert [(h["from_version"], h["to_version"], h["cause"]) for h in history] == [
        (None, 1, "api"),
        (1, 2, "api"),
        (2, 3, "promotion"),
        (3, 2, "rollback"),
    ]
    page = (await client.get("/v1/models/churn/aliases/champion/history?limit=3", headers=viewer)).json()
    assert len(page["items"]) == 3
    rest = (await client.get(f"/v1/models/churn/aliases/champion/history?after={page['next']}", headers=viewer)).json()
    assert [h["cause"] for h in rest["items"]] == ["rollback"]

    # Every change is a model.alias.changed event, the deployer-caused ones linked to their cause.
    events = await registry.events_on("vigil.models", expect=3 + 5)
    changes = [e for e in events if e["type"] == "model.alias.changed"]
    assert len(changes) == 5
    caused = {e["data"]["cause"]: e for e in changes if e["data"]["alias"] == "champion"}
    assert caused["promotion"]["causationid"] == promoted.id
    assert caused["promotion"]["correlationid"] == promoted.correlationid
    assert caused["rollback"]["causationid"] == rolled_back.id
    assert [h["event_id"] for h in history] == [e["id"] for e in changes if e["data"]["alias"] == "champion"]

    # Deleting an alias (by a scientist: not champion) records a change to null.
    r = await client.delete("/v1/models/churn/aliases/challenger", headers=scientist)
    assert r.status_code == 200
    assert r.json()["to_version"] is None
    assert (await client.get("/v1/models/churn/aliases/challenger", headers=viewer)).json()["version"] is None
    assert (await client.delete("/v1/models/churn/aliases/challenger", headers=scientist)).status_code == 404
    aliases = (await client.get("/v1/models/churn/aliases", headers=viewer)).json()["items"]
    assert [(a["alias"], a["version"]) for a in aliases] == [("champion", 2)]

    # Lineage of v3: dataset → run (of job-7) → v3 → churn-prod.
    graph = (await client.get("/v1/lineage/models/churn/versions/3", headers=viewer)).json()
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert graph["root"] == "model:churn/v3"
    assert graph["truncated"] is False
    ds = nodes["dataset:patients/v1"]
    assert (ds["namespace"], ds["name"], ds["version"]) == ("vigil", "patients", 1)
    assert ds["facets"]["content_digest"] == dataset["content_digest"]
    run = nodes["run:churn/run-3"]
    assert run["runId"] == "run-3"
    assert run["job"] == {"namespace": "vigil", "name": "churn/job/job-7"}
    assert nodes["deployment:churn-prod"]["facets"]["status"] == "rolled_back"
    edges = {(e["source"], e["target"], e["kind"]) for e in graph["edges"]}
    assert edges == {
        ("dataset:patients/v1", "run:churn/run-3", "input"),
        ("job:churn/job/job-7", "run:churn/run-3", "run_of"),
        ("run:churn/run-3", "model:churn/v3", "output"),
        ("model:churn/v3", "deployment:churn-prod", "deployed_as"),
    }
    upstream_only = (await client.get("/v1/lineage/models/churn/versions/3?direction=upstream", headers=viewer)).json()
    assert "deployment:churn-prod" not in {n["id"] for n in upstream_only["nodes"]}

    # Lineage of the dataset version: every run that trained on it, their versions and deployments.
    graph = (await client.get("/v1/lineage/datasets/patients/versions/1", headers=viewer)).json()
    ids = {n["id"] for n in graph["nodes"]}
    assert {"model:churn/v1", "model:churn/v2", "model:churn/v3"} <= ids
    assert {"deployment:churn-prod", "deployment:churn-test"} <= ids
    small = (await client.get("/v1/lineage/datasets/patients/versions/1?max_nodes=3", headers=viewer)).json()
    assert small["truncated"] is True
    assert len(small["nodes"]) == 3
    assert (await client.get("/v1/lineage/datasets/patients/versions/9", headers=viewer)).status_code == 404
    assert (await client.get("/v1/lineage/models/churn/versions/9", headers=viewer)).status_code == 404
