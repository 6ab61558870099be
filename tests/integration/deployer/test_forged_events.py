"""Forged control events on the bus (issue #20): a plain aiokafka producer publishes ``rollback.requested``,
``analysis.verdict`` (Successful) and ``model.version.registered`` straight to the broker — unsigned, signed by a
key nobody trusts, under the monitor's key id with another key's signature, and with the valid key of a service
that may not produce them. With a canary at 50 % none is applied: the weights, the rollout and the deployer's
versions stay as they were; each record is in the DLQ with its reason and in the audit log as ``event.rejected``.
Legitimately signed events next to them still work, and the auditor records their verified signer."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from deployer_support import Deployer, linear

from support.kafka import read_all
from support.services import eventually, running, settings_for
from support.signing import signing_key
from vigil.auditor.app import make_app as make_auditor
from vigil.auditor.settings import AuditorSettings
from vigil.events import topics
from vigil.events.catalog.common import Evidence
from vigil.events.signing import SigningKey, claimed_kid

pytestmark = pytest.mark.integration

MONITOR = signing_key("service:monitor")
STRANGER = SigningKey.of("service:monitor", Ed25519PrivateKey.generate())  # not in the trust store
#: Under the monitor's key id, signed by another key: the signature does not verify.
IMPOSTOR = SigningKey("service:monitor", STRANGER.private, MONITOR.kid)
#: A key the trust store holds, of a service that may produce none of the three types.
WRONG_SERVICE = signing_key("service:trainer")

FORGERIES: dict[str, dict[str, Any]] = {
    "unsigned": {"sign": False},
    "unknown_key": {"signer": STRANGER},
    "bad_signature": {"signer": IMPOSTOR},
    "unauthorised_signer": {"signer": WRONG_SERVICE},
}


async def _canary_at_half(deployer: Deployer) -> str:
    await deployer.register_version("fraud-model", 1, linear(0.5))
    await deployer.register_version("fraud-model", 2, linear(-0.5))

    async def created() -> bool:
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

    await eventually(created, what="deployment created once v1 is known")
    r = await deployer.client.post(
        "/v1/deployments/fraud/rollouts", json={"version": 2}, headers=deployer.h("deployer")
    )
    assert r.status_code == 201, r.text
    assert r.json()["weights"] == {"stable": 50, "candidate": 50}
    return str(r.json()["rollout"]["id"])


async def test_forged_control_events_are_refused_dead_lettered_and_audited(
    deployer: Deployer, fresh_db: str, tmp_path: Path
) -> None:
    settings = settings_for(
        AuditorSettings,
        dsn=fresh_db,
        bootstrap=deployer.bootstrap,
        prefix=deployer.prefix,
        tokens=deployer.tokens,
        home=tmp_path / "auditor",
    )
    async with running(make_auditor(settings)) as auditor:
        rollout_id = await _canary_at_half(deployer)
        before = await deployer.get("fraud")
        evidence = [Evidence(statistic="auc", value=0.5, threshold=0.05, operator="gt", breached=True, sample_size=900)]

        forged_ids: dict[str, str] = {}
        for how, publish in FORGERIES.items():
            rollback = await deployer.rollback_requested(
                "fraud", "fraud-model", rollout_id=rollout_id, candidate_version=2, evidence=evidence, **publish
            )
            verdict = await deployer.verdict(
                "fraud",
                "fraud-model",
                "Successful",
                rollout_id=rollout_id,
                step_index=1,
                candidate_version=2,
                **publish,
            )
            registered = await deployer.register_version("fraud-model", 3, linear(0.1), **publish)
            forged_ids.update({rollback.id: how, verdict.id: how, registered.id: how})

        # Every forged record dead-lettered by the deployer, with the reason of its forgery.
        async def deployer_letters() -> list[dict[str, Any]] | None:
            r = await deployer.client.get("/v1/dlq", headers=deployer.h("admin"))
            assert r.status_code == 200, r.text
            items = [i for i in r.json()["items"] if i["event_id"] in forged_ids]
            return items if len(items) == len(forged_ids) else None

        letters = await eventually(deployer_letters, what="12 forged records dead-lettered by the deployer")
        assert {(i["event_id"], i["reason"]) for i in letters} == set(forged_ids.items())
        assert Counter(i["event_type"] for i in letters) == {
            "rollback.requested": 4,
            "analysis.verdict": 4,
            "model.version.registered": 4,
        }

        # Nothing applied: same weights, same rollout, no version 3, no decision caused by a forgery.
        after = await deployer.get("fraud")
        assert after["weights"] == {"stable": 50, "candidate": 50} == before["weights"]
        assert after["candidate_version"] == 2 and after["rollout"]["id"] == rollout_id
        assert after["rollout"] == before["rollout"]
        assert (
            await deployer.service.runtime.pool.fetchval("SELECT count(*) FROM model_versions WHERE version = 3") == 0
        )
        decisions = await deployer.events_on(topics.DEPLOYMENTS, expect=10_000, timeout=1.5)
        assert not [e for e in decisions if e.get("causationid") in forged_ids]

        # The auditor refused them too: one event.rejected entry each, none of them chained as an event.
        headers = deployer.h("auditor")

        async def refusals() -> list[dict[str, Any]] | None:
            r = await auditor.client.get(
                "/v1/entries", params={"type": "event.rejected", "limit": 500}, headers=headers
            )
            assert r.status_code == 200, r.text
            items = r.json()["items"]
            return items if len(items) >= len(forged_ids) else None

        entries = await eventually(refusals, what="12 event.rejected entries")
        assert {e["signer"] for e in entries} == {"service:auditor"}
        claimed: dict[str, str] = {}
        for entry in entries:
            r = await auditor.client.get(f"/v1/events/{entry['event_id']}", headers=headers)
            data = r.json()["event"]["data"]
            claimed[data["claimed_id"]] = data["reason"]
            assert data["claimed_actor"] == "service:monitor" or data["claimed_type"] == "model.version.registered"
            if data["reason"] == "unauthorised_signer":
                assert data["signer"] == "service:trainer"
        assert claimed == forged_ids
        for event_id in forged_ids:
            r = await auditor.client.get(f"/v1/events/{event_id}", headers=headers)
            assert r.status_code == 404, event_id

        # The legitimate registration is chained with its verified signer beside the claimed actor.
        r = await auditor.client.get("/v1/entries", params={"type": "model.version.registered"}, headers=headers)
        legit = r.json()["items"]
        assert len(legit) == 2 and {e["signer"] for e in legit} == {"service:registry"}

        # vigil.dlq carries each refusal with its reason, signed by the service that refused it.
        dlq = await read_all(deployer.bootstrap, f"{deployer.prefix}{topics.DLQ}", expect=2 * len(forged_ids))
        reasons = Counter(
            (dict(r.headers)["dlq_group"].decode().rsplit("-", 1)[-1], dict(r.headers)["dlq_reason"].decode())
            for r in dlq
        )
        assert reasons == {(service, reason): 3 for service in ("deployer", "auditor") for reason in FORGERIES}, reasons
        assert all(
            claimed_kid(r.headers) in {signing_key(f"service:{s}").kid for s in ("deployer", "auditor")} for r in dlq
        )

        # A correctly signed verdict is still applied: the canary promotes.
        await deployer.verdict(
            "fraud", "fraud-model", "Successful", rollout_id=rollout_id, step_index=1, candidate_version=2
        )
        await deployer.wait_for("fraud", "promoted", lambda d: d["stable_version"] == 2)
