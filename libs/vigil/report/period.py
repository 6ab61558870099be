"""A deployment's period report: every version served, every decision and incident with its causes, over
``[start, end)`` — what an internal audit asks for. Same pack format and verification as a model pack
(``kind: deployment``); the verifier also checks every cited event is about the deployment and inside the period.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from vigil.report.cite import from_api
from vigil.report.collect import DECISION_TYPES, FORMAT, AuditEntries, event_facts
from vigil.report.sources import ReportError, Sources

#: Decisions that are incidents: something went wrong or was judged to.
INCIDENT_TYPES = frozenset(
    {"deployment.rolled_back", "deployment.aborted", "rollback.requested", "slo.breached", "drift.detected"}
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def build_deployment_pack(sources: Sources, deployment: str, start: datetime, end: datetime) -> dict[str, Any]:
    """The period report of ``deployment`` over ``[start, end)`` (aware datetimes). Raises ReportError."""
    if start.tzinfo is None or end.tzinfo is None or end <= start:
        raise ReportError("the period needs two times with a time zone, --from before --to")
    record = sources.get_or_none("deployer", f"/v1/deployments/{deployment}")
    if record is None:
        raise ReportError(f"the deployer has no deployment {deployment}")
    audit = AuditEntries(sources)
    period = {"since": _iso(start), "until": _iso(end)}
    entries = [
        e for e in audit.listed(subject=f"deployment/{deployment}", **period) if e["event_type"] in DECISION_TYPES
    ]
    if not entries:
        raise ReportError(
            f"the audit log holds no decision about {deployment} between {period['since']} and {period['until']}"
        )
    decisions, incidents = [], []
    for entry in entries:
        event = audit.fetch(entry["event_id"])
        if event is None:
            continue
        facts = event_facts(entry["event_id"], event)
        decisions.append(facts)
        if entry["event_type"] in INCIDENT_TYPES:
            incidents.append({"event": facts, "why": _causes(sources, audit, entry["event_id"])})
    if audit.checkpoint is None:
        raise ReportError("none of the period's decisions is covered by a signed checkpoint yet")
    windows = _windows(audit, deployment, period)
    served = {
        when: from_api(
            f"auditor GET /v1/deployments/{deployment}/served-at?at={moment}",
            sources.get_or_none("auditor", f"/v1/deployments/{deployment}/served-at", at=moment),
        )
        for when, moment in (("at_start", period["since"]), ("at_end", period["until"]))
    }
    return {
        "format": FORMAT,
        "kind": "deployment",
        "subject": {"deployment": deployment, "from": period["since"], "to": period["until"]},
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": {"draft": False, "reason": "a period report records what happened; no sign-off applies"},
        "audit": {
            "checkpoint": audit.checkpoint,
            "served_key_id": sources.get("auditor", "/v1/keys")["key_id"],
            "entries": audit.entries,
            "not_covered": audit.not_covered,
        },
        "sections": {
            "deployment": from_api(f"deployer GET /v1/deployments/{deployment}", record),
            "served": served,
            "decisions": decisions,
            "incidents": incidents,
            "windows": windows,
        },
        "notes": [
            "Versions served, decisions and incidents are the audited events about the deployment whose event time "
            "lies in the period; what served at its start and end is the auditor's replay of those events "
            "(served-at), read from its API."
        ],
    }


def _causes(sources: Sources, audit: AuditEntries, event_id: str) -> list[dict[str, Any]]:
    """The incident's causal chain (the auditor's why walk), each step cited."""
    why = sources.get("auditor", f"/v1/why/{event_id}")
    steps = []
    for step in why["chain"][1:]:
        event = audit.fetch(step["event_id"])
        if event is not None:
            steps.append(event_facts(step["event_id"], event))
    return steps


def _windows(audit: AuditEntries, deployment: str, period: dict[str, str]) -> list[dict[str, Any]]:
    """Newest revision of each tumbling window of any version of the deployment in the period."""
    newest: dict[tuple[int, str, str], tuple[int, str, dict[str, Any]]] = {}
    for entry in audit.listed(subject_prefix=f"deployment/{deployment}/v", type="monitor.window", **period):
        event = audit.fetch(entry["event_id"])
        if event is None or event["data"]["window"].get("kind", "tumbling") != "tumbling":
            continue
        data = event["data"]
        key = (int(data["version"]), str(data["variant"]), str(data["window"]["start"]))
        if key not in newest or int(data.get("revision", 0)) >= newest[key][0]:
            newest[key] = (int(data.get("revision", 0)), entry["event_id"], event)
    ordered = sorted(newest.items(), key=lambda item: (item[0][2], item[0][0], item[0][1]))
    return [event_facts(event_id, event) for _key, (_rev, event_id, event) in ordered]
