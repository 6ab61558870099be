"""``why`` through the real broker and Postgres (#25 item 3): a deployment's why starts from its newest rollout,
promotion, rollback or monitor request — not from a verdict that came later — and a rollback's chain goes past the
monitor's window (evidence) to the rollout, the candidate version and the data that produced it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audit_support import all_entries, auditor, causal_chain, event, topic_of

from support.kafka import produce_events
from support.services import RunningService, Tokens, eventually, make_tokens
from vigil.events import Envelope, new_id


async def _publish(bootstrap: str, prefix: str, events: list[Envelope]) -> None:
    for e in events:  # one at a time, in order: the chain crosses topics
        await produce_events(bootstrap, prefix + topic_of(e), [e])


async def _why(service: RunningService, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    target = params.pop("event_id", None)
    r = await service.client.get(f"/v1/why/{target}" if target else "/v1/why", params=params, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _kinds(why: dict[str, Any]) -> list[str]:
    return [e["event_type"] for e in why["chain"]]


async def test_why_deployment_starts_at_its_decision_and_a_rollback_reaches_the_data(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    headers = tokens.headers("auditor")
    # data.updated → dataset.version.registered → training.requested → training.completed → model.version.registered
    # (readmission v8) → deployment.rollout.started (readmission-api, candidate v8), each caused by the one before.
    upstream = causal_chain()[:-1]
    registered, started = upstream[-2], upstream[-1]
    rollout = started.data["rollout_id"]

    # The monitor's window (no cause: it is built from traffic) → rollback.requested → deployment.rolled_back; then,
    # after the rollback, an Inconclusive verdict about the same deployment.
    window = event("monitor.window", version=8, variant="candidate")
    request = event("rollback.requested", cause=window, rollout_id=rollout)
    rolled_back = event("deployment.rolled_back", cause=request, rollout_id=rollout, request_event_id=request.id)
    later_verdict = event("analysis.verdict", cause=window, rollout_id=rollout, verdict="Inconclusive")

    # Another deployment: promoted, then a verdict the deployer refused (the rollout was over) arrives later.
    rollout_b = new_id()
    started_b = event("deployment.rollout.started", cause=registered, deployment="triage-api", rollout_id=rollout_b)
    promoted_b = event("deployment.promoted", cause=started_b, deployment="triage-api", rollout_id=rollout_b)
    refused_b = event(
        "analysis.verdict", deployment="triage-api", rollout_id=rollout_b, verdict="Failed", reason="rollout is over"
    )

    # A rollout started by a person (no cause) and rolled back by a person: the walk goes rollout → version → data.
    rollout_c = new_id()
    started_c = event("deployment.rollout.started", deployment="icu-api", rollout_id=rollout_c, trigger="api")
    rolled_back_c = event(
        "deployment.rolled_back", deployment="icu-api", rollout_id=rollout_c, trigger="api", request_event_id=None
    )

    # A rollback naming a rollout and a version the log has never seen: incomplete, and it says what is missing.
    ghost = event(
        "deployment.rolled_back", deployment="ghost-api", rollout_id=new_id(), failed_version=99, request_event_id=None
    )

    # A fresh extract the upstream sent because the monitor asked for a retrain: the data names that request as its
    # cause, so the root is the window — but the chain passed through the upstream announcement, and stops there.
    window_r = event("monitor.window", deployment="retrain-api")
    retrain = event("retrain.requested", cause=window_r, deployment="retrain-api")
    extract = event("data.updated", cause=retrain, actor="system:ehr-export")

    published = [
        *upstream, window, request, rolled_back, later_verdict,
        started_b, promoted_b, refused_b, started_c, rolled_back_c, ghost, window_r, retrain, extract,
    ]  # fmt: skip
    async with auditor(
        dsn=fresh_db, bootstrap=kafka_bootstrap, prefix=topic_prefix, tokens=tokens, home=tmp_path
    ) as service:
        await _publish(kafka_bootstrap, topic_prefix, published)

        async def all_seen() -> bool:
            audited = {entry["event_id"] for entry in await all_entries(service, headers)}
            return audited >= {e.id for e in published}

        await eventually(all_seen, what="every published event audited")

        # why deployment/readmission-api: the rollback, not the later Inconclusive verdict.
        why = await _why(service, headers, subject="deployment/readmission-api")
        assert why["chain"][0]["event_id"] == rolled_back.id, _kinds(why)
        # … and past the window to the rollout, the candidate version and the data update that produced it.
        assert [e["event_id"] for e in why["chain"]] == [
            rolled_back.id, request.id, window.id, *[e.id for e in reversed(upstream)]
        ], _kinds(why)  # fmt: skip
        assert why["complete"] is True and why["reaches_upstream"] is True
        assert why["links"] == [
            {
                "kind": "rollout",
                "from_event_id": rolled_back.id,
                "to_event_id": started.id,
                "detail": f"rollout {rollout}",
            }
        ]
        assert why["chain"][-1]["event"]["type"] == "data.updated"

        # The same walk from the rollback's own id.
        by_id = await _why(service, headers, event_id=rolled_back.id)
        assert [e["event_id"] for e in by_id["chain"]] == [e["event_id"] for e in why["chain"]]
        assert by_id["reaches_upstream"] is True

        # A promotion followed by a refused verdict: why starts at the promotion.
        why_b = await _why(service, headers, subject="deployment/triage-api")
        assert why_b["chain"][0]["event_id"] == promoted_b.id, _kinds(why_b)
        assert _kinds(why_b)[-1] == "data.updated" and why_b["complete"] is True

        # A person's rollout and rollback: rollout start (no cause) → the candidate's registration → its data.
        why_c = await _why(service, headers, subject="deployment/icu-api")
        assert _kinds(why_c)[:3] == ["deployment.rolled_back", "deployment.rollout.started", "model.version.registered"]
        assert [link["kind"] for link in why_c["links"]] == ["rollout", "model_version"]
        assert why_c["chain"][2]["event_id"] == registered.id
        assert why_c["reaches_upstream"] is True

        why_r = await _why(service, headers, event_id=extract.id)
        assert [e["event_id"] for e in why_r["chain"]] == [extract.id, retrain.id, window_r.id]
        assert why_r["complete"] is True and why_r["reaches_upstream"] is True and why_r["links"] == []

        # Nothing to follow in the log: not complete, and the answer says which rollout is missing.
        why_ghost = await _why(service, headers, subject="deployment/ghost-api")
        assert why_ghost["complete"] is False and why_ghost["reaches_upstream"] is False
        assert "deployment.rollout.started is not in the audit log" in why_ghost["missing"]
