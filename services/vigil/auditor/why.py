"""The "why" walk: from an event back to the upstream event that started it.

The walk follows causation ids first (one recursive query per segment). A segment can end at an event that has no
cause but is not where the story starts: a monitor's window is the *evidence* behind a rollback or a promotion, not
its root — the root is the data that produced the version the rollout tried. So when a segment ends and the chain
has not passed through a ``data.updated`` yet, the walk looks at the deployment decisions it has seen and continues
from what they name:

1. a ``rollout_id`` → that rollout's ``deployment.rollout.started`` (link ``rollout``), whose causes lead to the
   candidate's registration, its training and its data;
2. else, or when the rollout's start is already in the chain and did not lead further, the model version the
   decision is about (``candidate_version``, ``failed_version``, ``version`` …) → its
   ``model.version.registered`` (link ``model_version``).

Every jump is reported as a :class:`Link`, so nothing in the chain pretends to be a causation id it is not. A link
whose target is not in the log (yet) makes the walk incomplete, like a missing cause.

``why deployment/<name>`` starts from the newest event that changed what the deployment serves or asked it to —
a rollout, promotion, rollback, abort, creation or a monitor request — not from a later verdict or window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from vigil.auditor import store
from vigil.events import parse_json

#: What ``why deployment/<name>`` starts from: the newest of these about the deployment.
DEPLOYMENT_ANCHORS = (
    "deployment.created",
    "deployment.rollout.started",
    "deployment.promoted",
    "deployment.rolled_back",
    "deployment.aborted",
    "rollback.requested",
    "retrain.requested",
)
#: Events that name a model version, and the data field naming it (the version the decision is about).
VERSION_FIELD = {
    "deployment.rolled_back": "failed_version",
    "deployment.aborted": "candidate_version",
    "deployment.promoted": "version",
    "deployment.rollout.started": "candidate_version",
    "deployment.rollout.step": "candidate_version",
    "deployment.created": "stable_version",
    "rollback.requested": "candidate_version",
    "analysis.verdict": "candidate_version",
    "model.alias.changed": "to_version",
}
#: Events that may name a rollout (``rollout_id``) whose start explains them.
ROLLOUT_LINKED = frozenset(VERSION_FIELD) - {"deployment.rollout.started", "deployment.created", "model.alias.changed"}
#: The upstream contract: a chain that reaches one of these is rooted in data.
UPSTREAM = frozenset({"data.updated"})
MAX_LINKS = 16


@dataclass(frozen=True)
class Link:
    """A step of the walk that is not a causation id: ``from_event_id`` names ``to_event_id``'s rollout or version."""

    kind: str  # "rollout" | "model_version"
    from_event_id: str
    to_event_id: str
    detail: str


@dataclass
class Walk:
    rows: list[asyncpg.Record]
    links: list[Link] = field(default_factory=list)
    complete: bool = False
    missing_event_id: str | None = None
    missing: str | None = None


def _data(row: Any) -> dict[str, Any]:
    event = parse_json(bytes(row["event"]))
    data = event.get("data") if isinstance(event, dict) else None
    return data if isinstance(data, dict) else {}


async def _next_link(conn: asyncpg.Connection, rows: Sequence[Any]) -> tuple[Link | None, str | None]:
    """The next place to continue from, or (None, why a wanted link is not in the log) / (None, None)."""
    seen = {r["event_id"] for r in rows}
    missing: str | None = None
    for row in rows:
        kind = row["event_type"]
        if kind not in VERSION_FIELD:
            continue
        data = _data(row)
        deployment, model, rollout = data.get("deployment"), data.get("model"), data.get("rollout_id")
        if kind in ROLLOUT_LINKED and isinstance(deployment, str) and isinstance(rollout, str):
            started = await store.latest_with_field(
                conn, f"deployment/{deployment}", "deployment.rollout.started", "rollout_id", rollout
            )
            if started is not None and started not in seen:
                return Link("rollout", row["event_id"], started, f"rollout {rollout}"), None
            if started is None:
                missing = missing or f"rollout {rollout}'s deployment.rollout.started is not in the audit log (yet)"
        version = data.get(VERSION_FIELD[kind])
        if isinstance(model, str) and isinstance(version, int) and not isinstance(version, bool):
            registered = await store.latest_for_subject(
                conn, f"model/{model}/v{version}", ("model.version.registered",)
            )
            if registered is not None and registered not in seen:
                return Link("model_version", row["event_id"], registered, f"{model} v{version}"), None
            if registered is None:
                missing = missing or f"model.version.registered of {model} v{version} is not in the audit log (yet)"
    return None, missing


def reaches_upstream(rows: Sequence[Any]) -> bool:
    """The chain passes through an upstream data announcement (it need not be the root: a fresh extract the
    upstream sent because the monitor asked for a retrain names that request as its cause)."""
    return any(r["event_type"] in UPSTREAM for r in rows)


async def walk(conn: asyncpg.Connection, event_id: str, max_depth: int) -> Walk | None:
    """The chain from ``event_id`` to its root (nearest first), following links past evidence; None if unknown."""
    rows = list(await store.why_walk(conn, event_id, max_depth))
    if not rows:
        return None
    result = Walk(rows)
    while True:
        last = result.rows[-1]
        if len(result.rows) >= max_depth:
            result.missing = "the walk stopped at the auditor's depth limit"
            return result
        if last["causation_id"] is not None:
            result.missing_event_id = last["causation_id"]
            result.missing = f"cause {last['causation_id']} is not in the audit log (yet)"
            return result
        if reaches_upstream(result.rows) or len(result.links) >= MAX_LINKS:
            result.complete = True
            return result
        link, missing = await _next_link(conn, result.rows)
        if link is None:
            result.complete = missing is None
            result.missing = missing
            return result
        result.links.append(link)
        seen = {r["event_id"] for r in result.rows}
        segment = await store.why_walk(conn, link.to_event_id, max_depth - len(result.rows))
        result.rows.extend(r for r in segment if r["event_id"] not in seen)


async def start_for_subject(conn: asyncpg.Connection, subject: str) -> str | None:
    """The event ``why <subject>`` starts from: for a deployment its newest anchor (else its newest event), for
    anything else the newest event about it."""
    parts = subject.split("/")
    if len(parts) == 2 and parts[0] == "deployment" and parts[1]:
        anchor = await store.latest_for_subject(conn, subject, DEPLOYMENT_ANCHORS)
        if anchor is not None:
            return anchor
    return await store.latest_for_subject(conn, subject)
