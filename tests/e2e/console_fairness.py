"""A small second deployment in the console tests' stack whose traffic carries a group column, so the monitoring
page's fairness view has data (the demo's patients have no categorical attribute).

What is real: the version is registered through the registry's API (an uploaded artifact, a reference profile with
the categorical ``site`` column), the deployment is created through the deployer's, the monitor policy (with
``fairness.attribute``) through the monitor's; the monitor folds the traffic from the broker into Postgres and
computes the gaps itself. What stands in for a part of the platform: the gateway. It logs only a model's numeric
inputs (``prediction.logged`` with ``categorical={}``, services/vigil/deployer/batcher.py), so no request through it
can carry a group column; the batch is published as the deployer would publish it — signed with the deployer's
key from the test run's key store (tests/support/signing.py), as the monitor's own integration tests do.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np

from support.kafka import produce_events
from vigil.events import canonical_json, make_event, topics
from vigil.events.catalog.streams import LabelObserved, ObservedLabel, PredictionLogged
from vigil.kernels.profile import DatasetProfile
from vigil.stack.supervisor import RunningStack

DEPLOYMENT, MODEL = "clinic-fairness", "clinic-fairness-clf"
ATTRIBUTE = "site"
#: The sites' share of the traffic and how often the model flags a patient of each (the gaps the page must show).
SITES = {"north": (0.4, 0.60), "south": (0.35, 0.30), "east": (0.25, 0.45)}
NUMERIC = ["age", "glucose"]
ROWS = 600
#: How long one window may take to close with its labels on a loaded host (window + grace + watermark).
CLOSE_BOUND_S = 120.0
#: The policy in force: gaps over 0.2 are a breach (north 0.60 vs south 0.30 is one), judged from 100 labelled rows.
POLICY = {
    "fairness": {
        "attribute": ATTRIBUTE,
        "max_demographic_parity_difference": 0.2,
        "max_equalized_odds_difference": 0.2,
        "min_samples": 100,
    },
    # Nothing to roll back to or retrain: the view is what is tested, not the loop's actions.
    "actions": {"rollback_on": ["candidate_worse", "slo_breach"], "retrain_on_drift_windows": None},
}


@dataclass(frozen=True)
class FairDeployment:
    deployment: str
    version: int
    #: The closed window (``/v1/windows`` item) whose figures hold the gaps.
    window: dict[str, Any]


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _ok(response: httpx.Response, *codes: int) -> Any:
    assert response.status_code in (codes or (200,)), f"{response.request.url}: {response.status_code} {response.text}"
    return response.json()


def _reference(rng: np.random.Generator) -> dict[str, Any]:
    rows = 5000
    x = np.asfortranarray(np.column_stack([rng.normal(55, 14, rows), rng.normal(100, 18, rows)]))
    names = list(SITES)
    sites = np.array(names)[rng.choice(len(names), size=rows, p=[share for share, _ in SITES.values()])]
    profile = DatasetProfile.build(x, [sites], numeric_names=NUMERIC, categorical_names=[ATTRIBUTE], n_bins=32)
    return profile.to_dict()


def _register(stack: RunningStack, token: str, rng: np.random.Generator) -> int:
    """Upload an artifact and register it by hand with a reference profile that has the ``site`` column."""
    registry = stack.url("registry")
    artifact = canonical_json({"model": MODEL, "note": "the console's fairness view: served by no gateway"})
    uploaded = _ok(
        httpx.post(f"{registry}/v1/artifacts", params={"format": "json"}, content=artifact, headers=_h(token)),
        201,
    )
    profile = _reference(rng)
    digest = "sha256:" + hashlib.sha256(canonical_json(profile)).hexdigest()
    body = {
        "artifact_digest": uploaded["digest"],
        "reference_profile": profile,
        "reference_profile_digest": digest,
        "signature": [{"name": n, "type": "float"} for n in NUMERIC] + [{"name": ATTRIBUTE, "type": "string"}],
        "description": "a version whose traffic carries a sensitive attribute (the console's fairness view)",
    }
    version = _ok(httpx.post(f"{registry}/v1/models/{MODEL}/versions", json=body, headers=_h(token)), 201)
    return int(version["version"])


def _traffic(version: int, at: datetime, rng: np.random.Generator) -> tuple[PredictionLogged, LabelObserved]:
    """One batch of the version's predictions in the window starting ``at`` (outputs flag the sites at their rates)
    and the outcomes of all of them."""
    names = list(SITES)
    site = rng.choice(len(names), size=ROWS, p=[share for share, _ in SITES.values()])
    flag_rate = np.array([rate for _, rate in SITES.values()])[site]
    outputs = (rng.random(ROWS) < flag_rate).astype(float)
    truth = np.where(rng.random(ROWS) < 0.8, outputs, 1 - outputs)  # right four times in five
    ids = [uuid.uuid4().hex for _ in range(ROWS)]
    prediction = PredictionLogged(
        deployment=DEPLOYMENT,
        model=MODEL,
        version=version,
        variant="stable",
        first_at=at,
        last_at=at,
        prediction_ids=ids,
        numeric={"age": rng.normal(55, 14, ROWS).tolist(), "glucose": rng.normal(100, 18, ROWS).tolist()},
        categorical={ATTRIBUTE: [names[i] for i in site]},
        outputs=outputs.tolist(),
        scores=np.clip(outputs * 0.7 + rng.random(ROWS) * 0.3, 0, 1).tolist(),
        latency_ms=(5 + rng.random(ROWS)).tolist(),
    )
    outcomes = [ObservedLabel(prediction_id=i, label=float(t)) for i, t in zip(ids, truth, strict=True)]
    labels = LabelObserved(deployment=DEPLOYMENT, labels=outcomes)
    return prediction, labels


def _closed(stack: RunningStack, token: str, start: str) -> dict[str, Any] | None:
    """The deployment's tumbling window starting at ``start`` once it is closed with every label, else None."""
    answer = _ok(
        httpx.get(
            f"{stack.url('monitor')}/v1/windows",
            params={"deployment": DEPLOYMENT, "kind": "tumbling", "limit": 100},
            headers=_h(token),
        )
    )
    for w in answer["items"]:
        if w["figures"]["start"].replace("Z", "+00:00") == start and w["figures"]["labels"] >= ROWS:
            found: dict[str, Any] = w
            return found
    return None


def play(stack: RunningStack, token: str, window_s: float) -> FairDeployment:
    """Register, deploy, set the policy, send one window of traffic with its labels; return the closed window.

    ``token`` needs the scientist (register) and deployer (deployment, policy) roles: the stack's admin token;
    ``window_s`` is the monitor's window length in this stack."""
    rng = np.random.default_rng(22)
    version = _register(stack, token, rng)
    _ok(
        httpx.post(
            f"{stack.url('deployer')}/v1/deployments",
            json={"name": DEPLOYMENT, "model": MODEL, "strategy": "canary", "auto_deploy": "manual"},
            headers=_h(token),
        ),
        201,
    )
    _ok(httpx.put(f"{stack.url('monitor')}/v1/policies/{DEPLOYMENT}", json=POLICY, headers=_h(token)))
    # The next window: still open when the batch and its labels are folded, whatever the host's pace. The batch may
    # reach the monitor before the registry's model.version.registered does (other topic): the monitor holds it until
    # then (services/vigil/monitor/held_predictions.py), so its features and groups count in this very window.
    at = datetime.fromtimestamp((np.floor(time.time() / window_s) + 1) * window_s, UTC)
    prediction, labels = _traffic(version, at, rng)
    envelope = make_event(prediction, source="vigil://deployer", actor="service:deployer")
    asyncio.run(produce_events(stack.bootstrap_servers, topics.PREDICTIONS, [envelope], key=DEPLOYMENT.encode()))
    outcome = make_event(labels, source="vigil://tests/outcomes", actor="system:tests")
    asyncio.run(produce_events(stack.bootstrap_servers, topics.LABELS, [outcome], key=DEPLOYMENT.encode()))
    deadline = time.monotonic() + CLOSE_BOUND_S
    window = None
    while window is None and time.monotonic() < deadline:
        window = _closed(stack, token, at.isoformat())
        if window is None:
            time.sleep(0.5)
    assert window is not None, f"the window starting {at.isoformat()} did not close with its {ROWS} labels"
    fairness = window["figures"].get("fairness") or {}
    features = sorted(window["figures"].get("features") or {})
    assert fairness.get("count", 0) >= ROWS and "demographic_parity_difference" in fairness, (fairness, features)
    return FairDeployment(DEPLOYMENT, version, window)
