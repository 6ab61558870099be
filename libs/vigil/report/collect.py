"""Build a model version's evidence pack from the services' APIs, citing the audit entry behind every event fact.

The registry says which event registered the version; the auditor gives that event, its causes (the why walk), the
deployment decisions, monitor windows and alias moves about the version — each fetched as an inclusion proof against
one signed checkpoint, so every cited fact can be checked offline. What no event carries (the trainer's run record,
current policies, the lineage graph) is included from the APIs and marked as such. docs/reports.md.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from vigil.events.catalog.cards import CARD_FIELDS, card_digest
from vigil.report.cite import PointerError, cited, from_api, pointer_to, resolve, value
from vigil.report.sources import NotCheckpointedYet, ReportError, Sources

FORMAT = "vigil.evidence-pack/v1"

#: Decisions about a deployment that a model card's deployment history lists.
DECISION_TYPES = (
    "deployment.created",
    "deployment.rollout.started",
    "deployment.rollout.step",
    "deployment.paused",
    "deployment.resumed",
    "deployment.promoted",
    "deployment.rolled_back",
    "deployment.aborted",
    "analysis.verdict",
    "rollback.requested",
    "drift.detected",
    "slo.breached",
    "retrain.requested",
)
#: Payload fields that name the version a deployment event is about.
VERSION_FIELDS = ("version", "candidate_version", "stable_version", "failed_version", "previous_version")

NOT_YET_EVENTS = (
    "Policy changes are audited events only from issue #20 item 5 on (policy.gates.changed, "
    "policy.retraining.changed, policy.monitor.changed); the changes listed in section 6 are those the audit log "
    "holds, and the policies in force are read from the services' current policy APIs, with each version's own "
    "timestamp and author where the API keeps them. A change made before those events existed cannot be proven "
    "from the audit log."
)
#: Where the services file their policy-change events (subject -> type), per model or deployment.
POLICY_SUBJECTS = (
    ("model/{model}/gates", "policy.gates.changed"),
    ("model/{model}/retraining-policy", "policy.retraining.changed"),
)


class AuditEntries:
    """Cited entries, each fetched once as an inclusion proof against the same checkpoint (tree size)."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.checkpoint: dict[str, Any] | None = None
        self.entries: dict[str, dict[str, Any]] = {}
        self.not_covered: list[dict[str, Any]] = []

    def fetch(self, event_id: str) -> dict[str, Any] | None:
        """The audited event (envelope) of ``event_id``, or None when the checkpoint does not cover it yet."""
        if event_id in self.entries:
            return dict(self.entries[event_id]["event"])
        tree_size = None if self.checkpoint is None else self.checkpoint["to_seq"]
        answer = self.sources.response("auditor", f"/v1/proofs/inclusion/{event_id}", tree_size=tree_size)
        if answer.status_code == 409:
            self.not_covered.append({"event_id": event_id, "why": answer.json().get("detail", answer.text)})
            return None
        if answer.status_code >= 400:
            raise ReportError(f"the auditor answered {answer.status_code} for event {event_id}: {answer.text[:300]}")
        proof = answer.json()
        if self.checkpoint is None:
            self.checkpoint = proof["checkpoint"]
        self.entries[event_id] = {
            "entry": proof["entry"],
            "event": proof["event"],
            "leaf_index": proof["leaf_index"],
            "audit_path": proof["audit_path"],
        }
        return dict(proof["event"])

    def listed(self, **filters: Any) -> list[dict[str, Any]]:
        """Entries (without events) matching the auditor's filters, in chain order, within the checkpoint."""
        items = self.sources.pages("auditor", "/v1/entries", **filters)
        if self.checkpoint is None:
            return items
        size = self.checkpoint["to_seq"]
        for late in (e for e in items if e["seq"] > size):
            if all(n["event_id"] != late["event_id"] for n in self.not_covered):
                why = f"entry {late['seq']} ({late['event_type']}) is newer than the pack's checkpoint 1..{size}"
                self.not_covered.append({"event_id": late["event_id"], "why": why})
        return [e for e in items if e["seq"] <= size]


def fact(event_id: str, event: dict[str, Any], *parts: str | int) -> dict[str, Any] | None:
    """A cited fact at a path of the event, or None when the event has no such field."""
    try:
        return cited(event_id, event, pointer_to(*parts))
    except PointerError:
        return None


def event_facts(event_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """The parts of an event a timeline shows, each cited: type, time, actor, subject and the whole payload."""
    return {key: f for key in ("type", "time", "actor", "subject", "data") if (f := fact(event_id, event, key))}


def _concerns(event: dict[str, Any], version: int) -> bool:
    data = event.get("data") or {}
    return any(data.get(field) == version for field in VERSION_FIELDS)


def build_model_pack(sources: Sources, model: str, version: int, *, built_by: str = "") -> dict[str, Any]:
    """The evidence pack of ``model`` version ``version`` (a JSON-ready dict). Raises ReportError."""
    base = f"/v1/models/{model}/versions/{version}"
    found = sources.get_or_none("registry", base)
    if found is None:
        raise ReportError(f"the registry has no version {version} of model {model}")
    audit = AuditEntries(sources)
    registered_id = found["registered_event_id"]
    registered = audit.fetch(registered_id)
    if registered is None:
        raise NotCheckpointedYet(
            f"the registration of {model} v{version} (event {registered_id}) is not covered by a signed checkpoint yet;"
            " build the pack after the auditor's next checkpoint"
        )
    assert audit.checkpoint is not None
    keys = sources.get("auditor", "/v1/keys")

    sections: dict[str, Any] = {
        "model": _model_section(registered_id, registered, found),
        "training": _training_section(sources, found),
        "lineage": _lineage_section(sources, audit, registered_id, model, version),
        "deployments": _deployments_section(sources, audit, model, version),
        "aliases": _aliases_section(audit, model, version, found),
        "comparison": {},
        "policies": _policies_section(sources, model, registered),
        "policy_changes": _policy_changes(audit, model, sources),
        "human": _human_section(sources, audit, model, version),
    }
    sections["comparison"] = _comparison(sources, audit, model, sections["deployments"])
    return {
        "format": FORMAT,
        "kind": "model",
        "subject": {"model": model, "version": version},
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "built_by": built_by,
        "status": sign_off_status(sections["human"]),
        "audit": {
            "checkpoint": audit.checkpoint,
            "served_key_id": keys["key_id"],
            "entries": audit.entries,
            "not_covered": audit.not_covered,
        },
        "sections": sections,
        "notes": [NOT_YET_EVENTS],
    }


def _model_section(event_id: str, event: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    fields = (
        "version",
        "source",
        "artifact_format",
        "artifact_digest",
        "artifact_uri",
        "code_version",
        "params",
        "metrics",
        "datasets",
        "signature",
        "gates",
        "gate_policy_version",
        "job_id",
        "run_id",
        "reference_profile_digest",
        "description",
        "tags",
    )
    section: dict[str, Any] = {f: cite for f in fields if (cite := fact(event_id, event, "data", f)) is not None}
    section["registered_at"] = cited(event_id, event, "/time")
    section["registered_by"] = cited(event_id, event, "/actor")
    section["event_id"] = cited(event_id, event, "/id")
    section["current_aliases"] = from_api("registry GET /v1/models/{m}/versions/{n}", found.get("aliases"))
    return section


def _training_section(sources: Sources, found: dict[str, Any]) -> dict[str, Any]:
    run_id = found.get("run_id")
    if not run_id:
        return {"run": from_api("registry", None)}
    run = sources.get_or_none("trainer", f"/v1/runs/{run_id}")
    keep = (
        "run_id",
        "job_id",
        "attempt",
        "state",
        "entrypoint",
        "params",
        "datasets",
        "code_version",
        "worker",
        "queued_at",
        "started_at",
        "finished_at",
        "duration_s",
        "metrics",
        "timeout_s",
        "memory_limit_mb",
    )
    record = None if run is None else {k: run.get(k) for k in keep}
    return {"run": from_api(f"trainer GET /v1/runs/{run_id}", record)}


def _lineage_section(
    sources: Sources, audit: AuditEntries, registered_id: str, model: str, version: int
) -> dict[str, Any]:
    why = sources.get("auditor", f"/v1/why/{registered_id}")
    chain = []
    for step in why["chain"]:
        event = audit.fetch(step["event_id"])
        if event is not None:
            chain.append(event_facts(step["event_id"], event))
    graph = sources.get("registry", f"/v1/lineage/models/{model}/versions/{version}", direction="upstream")
    return {
        "why_chain": chain,
        "why_complete": from_api(f"auditor GET /v1/why/{registered_id}", why["complete"]),
        "reaches_upstream": from_api(f"auditor GET /v1/why/{registered_id}", why.get("reaches_upstream", False)),
        "graph": from_api(f"registry GET /v1/lineage/models/{model}/versions/{version}?direction=upstream", graph),
    }


def _deployments_section(sources: Sources, audit: AuditEntries, model: str, version: int) -> list[dict[str, Any]]:
    deployments = [d for d in sources.pages("deployer", "/v1/deployments") if d["model"] == model]
    out = []
    for dep in deployments:
        name = dep["name"]
        decisions = []
        for entry in audit.listed(subject=f"deployment/{name}"):
            if entry["event_type"] not in DECISION_TYPES:
                continue
            event = audit.fetch(entry["event_id"])
            if event is not None and _concerns(event, version):
                decisions.append(event_facts(entry["event_id"], event))
        windows = _windows(audit, name, version)
        if not decisions and not windows:
            continue
        rollouts = [
            r
            for r in sources.pages("deployer", f"/v1/deployments/{name}/rollouts")
            if version in (r.get("candidate_version"), r.get("stable_version"))
        ]
        out.append(
            {
                "deployment": from_api(f"deployer GET /v1/deployments/{name}", dep),
                "rollouts": from_api(f"deployer GET /v1/deployments/{name}/rollouts", rollouts),
                "decisions": decisions,
                "windows": windows,
                "monitor_policy": from_api(
                    f"monitor GET /v1/policies/{name}", sources.get_or_none("monitor", f"/v1/policies/{name}")
                ),
            }
        )
    return out


def _windows(audit: AuditEntries, deployment: str, version: int) -> list[dict[str, Any]]:
    """The newest revision of each tumbling monitor window of the version (late labels re-emit a window)."""
    newest: dict[tuple[str, str], tuple[int, str, dict[str, Any]]] = {}
    for entry in audit.listed(subject=f"deployment/{deployment}/v{version}", type="monitor.window"):
        event = audit.fetch(entry["event_id"])
        if event is None:
            continue
        data = event["data"]
        if data["window"].get("kind", "tumbling") != "tumbling":
            continue  # a rolling window merges tumbling windows the pack already has
        key = (str(data.get("variant")), str(resolve(data, "/window/start")))
        revision = int(data.get("revision", 0))
        if key not in newest or revision >= newest[key][0]:
            newest[key] = (revision, entry["event_id"], event)
    ordered = sorted(newest.values(), key=lambda item: (str(item[2]["data"]["window"]["start"]), item[1]))
    return [event_facts(event_id, event) for _rev, event_id, event in ordered]


def _aliases_section(audit: AuditEntries, model: str, version: int, found: dict[str, Any]) -> list[dict[str, Any]]:
    moves = []
    for entry in audit.listed(subject_prefix=f"model/{model}/alias/", type="model.alias.changed"):
        event = audit.fetch(entry["event_id"])
        if event is not None and version in (event["data"].get("to_version"), event["data"].get("from_version")):
            moves.append(event_facts(entry["event_id"], event))
    return moves


def _policies_section(sources: Sources, model: str, registered: dict[str, Any]) -> dict[str, Any]:
    gate_versions = sources.pages("registry", f"/v1/models/{model}/gates/versions")
    applied = registered["data"].get("gate_policy_version")
    return {
        "gate_policy_applied": from_api(
            f"registry GET /v1/models/{model}/gates/versions (version {applied})",
            next((g for g in gate_versions if g.get("version") == applied), None),
        ),
        "gate_policy_current": from_api(
            f"registry GET /v1/models/{model}/gates", sources.get("registry", f"/v1/models/{model}/gates")
        ),
        "gate_policy_versions": from_api(f"registry GET /v1/models/{model}/gates/versions", gate_versions),
        "retraining": from_api(
            f"scheduler GET /v1/policies/{model}", sources.get_or_none("scheduler", f"/v1/policies/{model}")
        ),
    }


def _human_section(sources: Sources, audit: AuditEntries, model: str, version: int) -> dict[str, Any]:
    """The card's human sections and its newest sign-off, each cited from its ``model.card.*`` event."""
    card = sources.get("registry", f"/v1/models/{model}/versions/{version}/card")
    sections: dict[str, Any] = {}
    for name in CARD_FIELDS:
        section = card["sections"].get(name)
        event = None if section is None else audit.fetch(section["event_id"])
        if section is not None and event is not None:
            eid = section["event_id"]
            sections[name] = {
                k: cited(eid, event, p)
                for k, p in (
                    ("text", "/data/text"),
                    ("revision", "/data/revision"),
                    ("edited_by", "/data/edited_by"),
                    ("time", "/time"),
                )
            }
    human: dict[str, Any] = {"sections": sections}
    sign = card.get("sign_off")
    event = None if sign is None else audit.fetch(sign["event_id"])
    if sign is not None and event is not None:
        human["sign_off"] = {
            "data": cited(sign["event_id"], event, "/data"),
            "time": cited(sign["event_id"], event, "/time"),
        }
    return human


def sign_off_status(human: dict[str, Any]) -> dict[str, Any]:
    """Signed off only when the newest cited sign-off approved exactly the cited texts (its digest is theirs)."""
    sign = human.get("sign_off")
    texts = {name: value(section["text"]) for name, section in (human.get("sections") or {}).items()}
    if sign is None:
        return {"draft": True, "reason": "no sign-off of this version's card is recorded (vigil card sign-off)"}
    data = value(sign["data"])
    if data["card_sha256"] != card_digest(texts):
        return {
            "draft": True,
            "reason": f"the card was edited after {data['signed_off_by']} signed it off; the sign-off covers an "
            "earlier text (or the newest edits are not under a signed checkpoint yet)",
        }
    return {
        "draft": False,
        "signed_off_by": data["signed_off_by"],
        "role": data["role"],
        "signed_off_at": value(sign["time"]),
        "statement": data.get("statement", ""),
    }


def _policy_changes(audit: AuditEntries, model: str, sources: Sources) -> list[dict[str, Any]]:
    """Every audited change of the model's gate and retraining policies and of its deployments' monitor policies,
    oldest first (empty where the services do not emit policy events yet)."""
    subjects = [(subject.format(model=model), kind) for subject, kind in POLICY_SUBJECTS]
    for dep in sources.pages("deployer", "/v1/deployments"):
        if dep["model"] == model:
            subjects.append((f"deployment/{dep['name']}/monitor-policy", "policy.monitor.changed"))
    found: list[tuple[int, str]] = []
    for subject, kind in subjects:
        found += [(e["seq"], e["event_id"]) for e in audit.listed(subject=subject, type=kind)]
    changes = []
    for _seq, event_id in sorted(found):
        event = audit.fetch(event_id)
        if event is not None:
            changes.append(event_facts(event_id, event))
    return changes


def _comparison(sources: Sources, audit: AuditEntries, model: str, deployments: list[dict[str, Any]]) -> dict[str, Any]:
    """The version this one was rolled out against (the stable side of its first rollout) and that version's
    registered metrics, both cited: the offline part of "compared with the champion it replaced"."""
    for dep in deployments:
        for decision in dep["decisions"]:
            data = value(decision.get("data"))
            if value(decision.get("type")) != "deployment.rollout.started" or not data.get("stable_version"):
                continue
            previous = sources.get_or_none("registry", f"/v1/models/{model}/versions/{data['stable_version']}")
            event = None if previous is None else audit.fetch(previous["registered_event_id"])
            if event is None:
                return {}
            eid, rollout = previous["registered_event_id"], decision["data"]
            return {
                "against": cited(rollout["$cite"], audit.entries[rollout["$cite"]]["event"], "/data/stable_version"),
                "version": cited(eid, event, "/data/version"),
                "metrics": cited(eid, event, "/data/metrics"),
                "gates": cited(eid, event, "/data/gates"),
            }
    return {}
