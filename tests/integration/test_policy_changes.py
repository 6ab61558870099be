"""Separation of duties and audited policy changes (issue #20 item 5): gate and monitor policies need a deployer or a
risk officer, never the scientist whose model they judge; every change to a gate, retraining or monitor policy is an
event on the bus, signed by the owning service, with the policy before and after and who changed it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from support.kafka import read_all
from support.services import Tokens, make_tokens, running, settings_for
from support.signing import keys_dir
from vigil.events.trust import TrustStore, trust_dir
from vigil.monitor.app import make_app as make_monitor
from vigil.monitor.settings import MonitorSettings
from vigil.registry.app import make_app as make_registry
from vigil.registry.settings import RegistrySettings
from vigil.scheduler.app import make_app as make_scheduler
from vigil.scheduler.settings import SchedulerSettings

pytestmark = pytest.mark.integration

GATES = {"gates": [{"name": "auc", "kind": "metric_floor", "metric": "roc_auc", "threshold": 0.7}]}
STRICTER = {"gates": [{"name": "auc", "kind": "metric_floor", "metric": "roc_auc", "threshold": 0.8}]}


async def _events(bootstrap: str, topic: str, event_type: str, expect: int) -> list[tuple[dict[str, Any], str]]:
    """(envelope, verified signer principal) of each ``event_type`` record on ``topic``: the signature is checked
    against the run's trust store as a consumer would."""
    trust = TrustStore.load(trust_dir(keys_dir()))
    found = []
    for record in await read_all(bootstrap, topic, expect=expect, timeout=30):
        envelope = orjson.loads(record.value)
        if envelope["type"] == event_type:
            found.append((envelope, trust.verify(record.value, record.headers).principal))
    return found


async def test_gate_policy_changes_need_deployer_or_risk_and_are_audited(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    where = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    settings = settings_for(RegistrySettings, **where)
    async with running(make_registry(settings)) as registry:
        url = "/v1/models/readmission/gates"
        for role in ("viewer", "scientist", "predictor", "auditor"):
            r = await registry.client.put(url, json=GATES, headers=tokens.headers(role))
            assert r.status_code == 403, (role, r.text)
        first = await registry.client.put(url, json=GATES, headers=tokens.headers("risk"))
        assert first.status_code == 200, first.text
        second = await registry.client.put(url, json=STRICTER, headers=tokens.headers("deployer"))
        assert second.status_code == 200, second.text

    changes = await _events(kafka_bootstrap, topic_prefix + "vigil.models", "policy.gates.changed", expect=3)
    assert [signer for _, signer in changes] == ["service:registry", "service:registry"]
    (one, _), (two, _) = changes
    assert one["actor"] == "user:test-risk" and one["data"]["changed_by"] == "user:test-risk"
    assert one["data"]["after"]["gates"][0]["threshold"] == 0.7
    assert two["data"]["change"] == "updated" and two["actor"] == "user:test-deployer"
    assert two["data"]["before"] == one["data"]["after"]
    assert two["data"]["after"]["gates"][0]["threshold"] == 0.8
    assert two["data"]["policy_version"] == second.json()["version"]


async def test_retraining_policy_changes_are_audited_with_before_and_after(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    settings = settings_for(
        SchedulerSettings, dsn=fresh_db, bootstrap=kafka_bootstrap, prefix=topic_prefix, tokens=tokens
    )
    policy = {
        "datasets": ["patients"],
        "entrypoint": "vigil.trainer.examples.patient_risk:train",
        "code_version": "v1",
        "debounce_s": 5,
    }
    async with running(make_scheduler(settings)) as scheduler:
        sci = tokens.headers("scientist")
        assert (await scheduler.client.put("/v1/policies/risk", json=policy, headers=sci)).status_code == 200
        moved = {**policy, "entrypoint": "vigil.trainer.examples.patient_risk:train_gbm"}
        assert (await scheduler.client.put("/v1/policies/risk", json=moved, headers=sci)).status_code == 200
        assert (await scheduler.client.delete("/v1/policies/risk", headers=sci)).status_code == 204

    changes = await _events(kafka_bootstrap, topic_prefix + "vigil.training", "policy.retraining.changed", expect=3)
    assert [signer for _, signer in changes] == ["service:scheduler"] * 3
    created, updated, deleted = (envelope["data"] for envelope, _ in changes)
    assert (created["change"], created["before"]) == ("created", None)
    assert updated["change"] == "updated" and updated["before"] == created["after"]
    assert updated["after"]["entrypoint"].endswith(":train_gbm")  # a new training entrypoint leaves a trace
    assert (deleted["change"], deleted["after"], deleted["before"]) == ("deleted", None, updated["after"])
    assert {c["changed_by"] for c in (created, updated, deleted)} == {"user:test-scientist"}


async def test_monitor_policy_changes_need_deployer_or_risk_and_are_audited(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    where = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    settings = settings_for(MonitorSettings, **where)
    async with running(make_monitor(settings)) as monitor:
        default = (await monitor.client.get("/v1/policies/triage", headers=tokens.headers("viewer"))).json()["policy"]
        loosened = {**default, "canary": {**default["canary"], "min_samples": default["canary"]["min_samples"] * 2}}
        r = await monitor.client.put("/v1/policies/triage", json=loosened, headers=tokens.headers("scientist"))
        assert r.status_code == 403, r.text
        r = await monitor.client.put("/v1/policies/triage", json=loosened, headers=tokens.headers("risk"))
        assert r.status_code == 200, r.text

    ((event, signer),) = await _events(
        kafka_bootstrap, topic_prefix + "vigil.monitoring", "policy.monitor.changed", expect=1
    )
    assert signer == "service:monitor" and event["actor"] == "user:test-risk"
    assert event["data"]["change"] == "created"  # the first stored policy replaces the default
    before, after = event["data"]["before"], event["data"]["after"]
    assert before["canary"]["min_samples"] * 2 == after["canary"]["min_samples"]
