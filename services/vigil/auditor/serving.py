""" "What served at time T": fold a deployment's ``deployment.*`` events (oldest first) into the split in force."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ServingState:
    model: str | None = None
    stable_version: int | None = None
    candidate_version: int | None = None
    weights: dict[str, int] = field(default_factory=lambda: {"stable": 100, "candidate": 0})
    phase: str = "unknown"  # stable | rolling_out | paused
    decided_by: str | None = None  # event id of the last event that changed what served


def fold(events: Iterable[Mapping[str, Any]]) -> ServingState:
    """Replay envelopes (dicts with ``type``, ``id``, ``data``) in chain order."""
    s = ServingState()
    for event in events:
        kind, data = event["type"], event["data"]
        s.model = data.get("model", s.model)
        if kind == "deployment.created":
            s.stable_version, s.candidate_version = data.get("stable_version"), None
            s.weights, s.phase = {"stable": 100, "candidate": 0}, "stable"
        elif kind == "deployment.rollout.started":
            s.stable_version, s.candidate_version = data.get("stable_version"), data["candidate_version"]
            s.weights, s.phase = {"stable": 100, "candidate": 0}, "rolling_out"
        elif kind == "deployment.rollout.step":
            s.stable_version, s.candidate_version = data.get("stable_version"), data["candidate_version"]
            s.weights, s.phase = dict(data["weights"]), "rolling_out"
        elif kind == "deployment.promoted":
            s.stable_version, s.candidate_version = data["version"], None
            s.weights, s.phase = {"stable": 100, "candidate": 0}, "stable"
        elif kind in ("deployment.rolled_back", "deployment.aborted"):
            s.stable_version, s.candidate_version = data.get("stable_version"), None
            s.weights, s.phase = {"stable": 100, "candidate": 0}, "stable"
        elif kind == "deployment.paused":
            s.phase = "paused"
            continue  # the split in force does not change
        elif kind == "deployment.resumed":
            s.phase = "rolling_out"
            continue
        else:
            continue
        s.decided_by = event["id"]
    return s
