"""Canary rollouts through the real broker and Postgres: auto-deploy, the 10 → 50 → 100 % walk and promotion, a
monitor-requested rollback mid-canary, and an inconclusive analysis that pauses and never promotes."""

from __future__ import annotations

from typing import Any

import pytest
from deployer_support import Deployer, key_for, linear, row

from support.services import eventually
from vigil.events import topics
from vigil.events.catalog.common import Evidence

pytestmark = pytest.mark.integration

# Binomial tolerance: 5 standard deviations at n requests (a correct split fails this about once in 3.5 million).
N = 300


def within(observed: int, n: int, p: float) -> bool:
    sd = (n * p * (1 - p)) ** 0.5
    return abs(observed - n * p) <= 5 * sd


async def test_canary_walks_10_50_100_and_promotes(deployer: Deployer) -> None:
    await deployer.create(
        name="churn",
        model="churn-model",
        strategy="canary",
        auto_deploy="auto",
        min_samples=100,
        steps=[
            {"kind": "set_weight", "weight": 10},
            {"kind": "analysis"},
            {"kind": "set_weight", "weight": 50},
            {"kind": "analysis"},
            {"kind": "set_weight", "weight": 100},
            {"kind": "pause", "duration_s": 0.3},  # fired by the durable ticker
            {"kind": "pause"},  # manual gate before promotion
        ],
    )
    # v1 is the first version: it serves at once. v2 starts a canary on its own (auto policy).
    await deployer.register_version("churn-model", 1, linear(0.5))
    await deployer.wait_for("churn", "v1 serving", lambda d: d["stable_version"] == 1)
    registered_v2 = await deployer.register_version("churn-model", 2, linear(-0.8))
    dep = await deployer.wait_for("churn", "canary at 10%", lambda d: d["weights"]["candidate"] == 10)
    rollout_id = dep["rollout"]["id"]
    assert dep["rollout"]["trigger"] == "auto" and dep["rollout"]["awaiting_verdict"] is True

    seen = await deployer.split("churn", N)
    assert set(seen) <= {1, 2} and within(seen[2], N, 0.10), seen

    await deployer.verdict(
        "churn", "churn-model", "Successful", rollout_id=rollout_id, step_index=1, candidate_version=2
    )
    await deployer.wait_for("churn", "canary at 50%", lambda d: d["weights"]["candidate"] == 50)
    seen = await deployer.split("churn", N)
    assert within(seen[2], N, 0.50), seen

    last = await deployer.verdict(
        "churn", "churn-model", "Successful", rollout_id=rollout_id, step_index=3, candidate_version=2
    )
    dep = await deployer.wait_for(
        "churn", "manual gate at 100%", lambda d: d["rollout"] and d["rollout"]["pause_reason"] == "awaiting_approval"
    )
    assert dep["weights"] == {"stable": 0, "candidate": 100}
    assert await deployer.split("churn", 30) == {2: 30}

    # Passing the manual gate needs a human with the deployer role.
    for role in ("viewer", "scientist"):
        r = await deployer.client.post("/v1/deployments/churn/resume", json={}, headers=deployer.h(role))
        assert r.status_code == 403
    r = await deployer.client.post(
        "/v1/deployments/churn/resume", json={"reason": "ok"}, headers=deployer.h("deployer")
    )
    assert r.status_code == 200, r.text
    dep = r.json()
    assert dep["stable_version"] == 2 and dep["candidate_version"] is None and dep["previous_version"] == 1
    assert dep["rollout"] is None
    assert await deployer.split("churn", 10) == {2: 10}

    events = await deployer.deployment_events("deployment.promoted", count=2)
    types = [e["type"] for e in events]
    assert types[0] == "deployment.created"
    promoted = [e for e in events if e["type"] == "deployment.promoted"]
    assert promoted[0]["data"]["version"] == 1 and promoted[0]["data"]["previous_version"] is None
    final = promoted[1]["data"]
    assert final["version"] == 2 and final["previous_version"] == 1 and final["rollout_id"] == rollout_id
    assert final["approved_by"] == "user:test-deployer" and final["verdict_event_id"] == last.id
    steps = [e["data"] for e in events if e["type"] == "deployment.rollout.step"]
    assert [(s["step_index"], s["weights"]["candidate"]) for s in steps] == [
        (0, 10),
        (1, 10),
        (2, 50),
        (3, 50),
        (4, 100),
        (5, 100),
        (6, 100),
    ]
    assert types.count("deployment.paused") == 1 and types.count("deployment.resumed") == 1
    # The causal chain: promotion ← … every rollout step … ← rollout.started ← v2 registered (DESIGN §1's "why is
    # v7 serving?"); the verdicts are evidence, named in the events (verdict_event_id), not links of the chain.
    started = next(e for e in events if e["type"] == "deployment.rollout.started")
    assert started["data"]["trigger"] == "auto" and started["causationid"] is not None
    by_id = {e["id"]: e for e in events}
    chain, cursor = [promoted[1]], promoted[1]
    while cursor["causationid"] in by_id:
        cursor = by_id[cursor["causationid"]]
        chain.append(cursor)
    types_back = [e["type"] for e in chain]
    assert types_back[:3] == ["deployment.promoted", "deployment.resumed", "deployment.paused"]
    assert chain[-1]["type"] == "deployment.rollout.started"
    assert chain[-1]["causationid"] == registered_v2.id
    assert "deployment.rollout.step" in types_back

    # Every answer was logged to vigil.predictions, per version and variant, off the response path.
    logged = await deployer.events_on(topics.PREDICTIONS, expect=1)

    async def all_rows() -> int | None:
        batches = await deployer.events_on(topics.PREDICTIONS, expect=10_000, timeout=1.5)
        total = sum(len(b["data"]["prediction_ids"]) for b in batches)
        return total if total >= 2 * N + 40 else None

    assert await eventually(all_rows, what="every prediction logged") == 2 * N + 40
    assert logged[0]["type"] == "prediction.logged"


async def test_rollback_requested_mid_canary_sends_all_traffic_to_stable(deployer: Deployer) -> None:
    await deployer.register_version("fraud-model", 1, linear(0.5))
    await deployer.register_version("fraud-model", 2, linear(-0.5))

    async def known() -> bool:
        r = await deployer.client.post(
            "/v1/deployments",
            json={
                "name": "fraud",
                "model": "fraud-model",
                "strategy": "canary",
                "stable_version": 1,
                "steps": [{"kind": "set_weight", "weight": 50}, {"kind": "analysis"}],
            },
            headers=deployer.h("deployer"),
        )
        return r.status_code == 201

    await eventually(known, what="deployment created once v1 is known")
    # Manual policy: nothing starts on its own; a deployer starts the rollout.
    r = await deployer.client.post("/v1/deployments/fraud/rollouts", json={"version": 2}, headers=deployer.h("viewer"))
    assert r.status_code == 403
    r = await deployer.client.post(
        "/v1/deployments/fraud/rollouts", json={"version": 2}, headers=deployer.h("deployer")
    )
    assert r.status_code == 201, r.text
    rollout_id = r.json()["rollout"]["id"]
    assert r.json()["weights"] == {"stable": 50, "candidate": 50}

    sticky = key_for("fraud", 50, "candidate")
    before = await deployer.predict("fraud", {"features": row(1), "key": sticky})
    assert before["version"] == 2 and before["variant"] == "candidate"

    evidence = [
        Evidence(
            statistic="auc",
            value=0.62,
            threshold=0.05,
            operator="gt",
            breached=True,
            baseline=0.81,
            p_value=0.001,
            sample_size=1200,
            version=2,
        ),
        Evidence(
            statistic="latency.p99_ms",
            value=12.0,
            threshold=50.0,
            operator="gt",
            breached=False,
            sample_size=1200,
            version=2,
        ),
    ]
    request = await deployer.rollback_requested(
        "fraud", "fraud-model", rollout_id=rollout_id, candidate_version=2, evidence=evidence
    )
    await deployer.wait_for("fraud", "rolled back", lambda d: d["candidate_version"] is None)
    # The very next request — the same sticky key that was on the candidate — is answered by stable.
    after = await deployer.predict("fraud", {"features": row(1), "key": sticky})
    assert after["version"] == 1 and after["variant"] == "stable"
    assert await deployer.split("fraud", 40) == {1: 40}

    events = await deployer.deployment_events("deployment.rolled_back")
    rolled = next(e for e in events if e["type"] == "deployment.rolled_back")
    assert rolled["causationid"] == request.id and rolled["correlationid"] == request.correlationid
    data = rolled["data"]
    assert data["trigger"] == "monitor" and data["failed_version"] == 2 and data["stable_version"] == 1
    assert data["request_event_id"] == request.id and data["policy_version"] == 4
    assert data["evidence"] == [e.model_dump(mode="json") for e in evidence]
    assert data["rollout_id"] == rollout_id and "candidate_worse" in data["reason"]

    # The same request again (say, redelivered with a new id) is refused loudly, not applied twice.
    await deployer.rollback_requested(
        "fraud", "fraud-model", rollout_id=rollout_id, candidate_version=2, evidence=evidence
    )

    async def refused() -> list[dict[str, object]] | None:
        history = (await deployer.rollout("fraud", rollout_id))["history"]
        rejected = [h for h in history if not h["accepted"]]
        return rejected or None

    rejected = await eventually(refused, what="the second rollback refused")
    assert "rolled_back" in str(rejected[0]["detail"])
    # A failed version is not rolled out again automatically, and the API says why a move does not fit.
    r = await deployer.client.post("/v1/deployments/fraud/promote", json={}, headers=deployer.h("deployer"))
    assert r.status_code == 409 and "no rollout in progress" in r.json()["detail"]


async def test_inconclusive_analysis_pauses_and_never_promotes(deployer: Deployer) -> None:
    await deployer.create(
        name="ltv",
        model="ltv-model",
        auto_deploy="auto",
        min_samples=100,
        steps=[{"kind": "set_weight", "weight": 10}, {"kind": "analysis"}, {"kind": "set_weight", "weight": 100}],
    )
    await deployer.register_version("ltv-model", 1, linear(0.3))
    await deployer.wait_for("ltv", "v1 serving", lambda d: d["stable_version"] == 1)
    await deployer.register_version("ltv-model", 2, linear(0.9))
    dep = await deployer.wait_for("ltv", "canary at 10%", lambda d: d["weights"]["candidate"] == 10)
    rollout_id = dep["rollout"]["id"]

    # "Successful" on 12 samples is not enough evidence: the rollout pauses.
    thin = await deployer.verdict(
        "ltv", "ltv-model", "Successful", rollout_id=rollout_id, step_index=1, candidate_version=2, samples=12
    )
    dep = await deployer.wait_for("ltv", "paused", lambda d: d["rollout"]["phase"] == "paused")
    assert dep["rollout"]["pause_reason"] == "inconclusive" and dep["weights"]["candidate"] == 10
    # Further verdicts do not move a paused rollout (refused and recorded), so nothing promotes it.
    await deployer.verdict(
        "ltv", "ltv-model", "Successful", rollout_id=rollout_id, step_index=1, candidate_version=2, samples=5000
    )

    async def refused() -> bool:
        history = (await deployer.rollout("ltv", rollout_id))["history"]
        return any(not h["accepted"] and h["action"] == "verdict:Successful" for h in history)

    await eventually(refused, what="the verdict on a paused rollout refused")
    dep = await deployer.get("ltv")
    assert dep["stable_version"] == 1 and dep["candidate_version"] == 2 and dep["rollout"]["phase"] == "paused"
    events = await deployer.deployment_events("deployment.paused")
    paused = next(e for e in events if e["type"] == "deployment.paused")
    assert paused["data"]["reason"] == "inconclusive" and paused["data"]["verdict_event_id"] == thin.id
    assert "too few samples" in paused["data"]["detail"]
    assert [e["data"]["version"] for e in events if e["type"] == "deployment.promoted"] == [1]

    # A human resume re-arms the analysis (it does not count as a pass).
    r = await deployer.client.post("/v1/deployments/ltv/resume", json={}, headers=deployer.h("deployer"))
    assert r.status_code == 200
    assert r.json()["rollout"]["phase"] == "progressing" and r.json()["rollout"]["awaiting_verdict"] is True
    assert r.json()["stable_version"] == 1


async def test_a_verdict_about_traffic_before_the_step_never_passes_it(deployer: Deployer) -> None:
    """The monitor judges windows, not steps: a verdict without a step counts only if its window began after the
    waiting analysis step did — an old (or late-revised) window at another weight must not pass it."""
    from datetime import UTC, datetime, timedelta

    from support.kafka import produce_events
    from vigil.events import make_event
    from vigil.events.catalog.common import Window
    from vigil.events.catalog.deployments import AnalysisVerdict

    await deployer.create(
        name="triage", model="triage-model", strategy="canary", auto_deploy="auto", min_samples=50,
        steps=[{"kind": "set_weight", "weight": 20}, {"kind": "analysis"}, {"kind": "set_weight", "weight": 100}],
    )  # fmt: skip
    await deployer.register_version("triage-model", 1, linear(0.4))
    await deployer.wait_for("triage", "v1 serving", lambda d: d["stable_version"] == 1)
    await deployer.register_version("triage-model", 2, linear(-0.4))
    await deployer.wait_for("triage", "canary at 20%", lambda d: d["weights"]["candidate"] == 20)

    def verdict(start: datetime) -> Any:
        return make_event(
            AnalysisVerdict(
                deployment="triage", model="triage-model", stable_version=1, candidate_version=2,
                verdict="Successful", window=Window(start=start, end=start + timedelta(seconds=30)),
                candidate_samples=500, stable_samples=500, evidence=[], policy_version=1,
            ),
            source="vigil://monitor", actor="service:monitor",
        )  # fmt: skip

    topic = f"{deployer.prefix}{topics.MONITORING}"
    stale = verdict(datetime.now(UTC) - timedelta(hours=1))
    await produce_events(deployer.bootstrap, topic, [stale], key=b"triage")

    async def refused() -> list[dict[str, Any]]:
        dep = await deployer.get("triage")
        rollout = await deployer.rollout("triage", dep["rollout"]["id"])
        return [h for h in rollout["history"] if not h["accepted"] and h["action"] == "verdict"]

    (refusal,) = await eventually(refused, what="the stale verdict refused")
    assert "before step" in refusal["detail"]
    dep = await deployer.get("triage")
    assert dep["weights"]["candidate"] == 20 and dep["rollout"]["awaiting_verdict"] is True

    fresh = verdict(datetime.now(UTC) + timedelta(seconds=1))
    await produce_events(deployer.bootstrap, topic, [fresh], key=b"triage")
    await deployer.wait_for("triage", "promoted after a fresh verdict", lambda d: d["stable_version"] == 2)
