"""The closed loop, step by step, over the services' HTTP APIs (and the labels topic for ground truth).

Every function takes an ``httpx.AsyncClient`` whose ``base_url`` is one service (a real URL, or an in-process ASGI
client in tests) and a bearer token, so ``vigil demo`` and the e2e test drive the same steps:

1. :func:`put_schedule_policy`, :func:`create_deployment`, :func:`put_monitor_policy` — configure the loop;
2. :func:`announce` — an upstream ``data.updated`` through the registry;
3. :func:`send_traffic` through the serving gateway, then :func:`publish_labels` with the true outcomes;
4. :func:`wait_deployment` / :func:`poll` — wait for what the platform does by itself (promotion, canary, rollback);
5. :func:`audited_events`, :func:`why`, :func:`verify` — read the outcome back from the audit log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import numpy as np
import numpy.typing as npt
from aiokafka import AIOKafkaProducer

from vigil.bus.client_options import KafkaSecurity
from vigil.events import make_event, topics
from vigil.events.catalog.streams import LabelObserved, ObservedLabel
from vigil.events.signing import SigningKey
from vigil.events.trust import local_producer_key

T = TypeVar("T")

LABELS_PER_EVENT = 500


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _json(response: httpx.Response, *expected: int) -> Any:
    if response.status_code not in (expected or (200,)):
        raise RuntimeError(
            f"{response.request.method} {response.request.url} → {response.status_code}: {response.text}"
        )
    return response.json()


async def poll(probe: Callable[[], Awaitable[T | None]], *, timeout_s: float, what: str, interval: float = 0.25) -> T:
    """Call ``probe`` until it returns something truthy; ``TimeoutError`` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}; last value: {last!r}")


# ------------------------------------------------------------------------------------------------ configure
async def put_schedule_policy(scheduler: httpx.AsyncClient, token: str, model: str, body: dict[str, Any]) -> Any:
    """The retraining policy of ``model`` (datasets, entrypoint, params, debounce, limits)."""
    return _json(await scheduler.put(f"/v1/policies/{model}", json=body, headers=_h(token)))


async def create_deployment(deployer: httpx.AsyncClient, token: str, body: dict[str, Any]) -> Any:
    """A serving endpoint with its rollout plan and auto-deploy policy."""
    return _json(await deployer.post("/v1/deployments", json=body, headers=_h(token)), 201)


async def put_monitor_policy(monitor: httpx.AsyncClient, token: str, deployment: str, policy: dict[str, Any]) -> Any:
    """The monitoring policy of ``deployment`` (drift, SLO, canary rules, actions)."""
    return _json(await monitor.put(f"/v1/policies/{deployment}", json=policy, headers=_h(token)))


# ------------------------------------------------------------------------------------------------ upstream
async def announce(registry: httpx.AsyncClient, token: str, update: dict[str, Any]) -> str:
    """POST a ``data.updated`` body to the registry; returns the announcement's event id."""
    answer = _json(await registry.post("/v1/data-updates", json=update, headers=_h(token)), 200, 201)
    return str(answer["event_id"])


@dataclass(frozen=True)
class Served:
    """One answered row: its prediction id, the version and variant that answered, the output and score."""

    prediction_id: str
    version: int
    variant: str
    output: Any
    score: float | None


async def send_traffic(
    deployer: httpx.AsyncClient,
    token: str,
    deployment: str,
    x: npt.NDArray[np.float64],
    feature_names: Sequence[str],
    *,
    rows_per_request: int = 20,
    attributes: Mapping[str, Sequence[str | None]] | None = None,
) -> list[Served]:
    """Send the rows of ``x`` through the gateway (``instances`` requests, no routing key); one entry per row.

    ``attributes`` are request fields beside the features, one value per row of ``x`` (e.g. ``{"site": [...]}``):
    the gateway logs those the deployment declares in ``logged_attributes`` and never feeds them to the model."""
    served: list[Served] = []
    extra = dict(attributes or {})
    for name, values in extra.items():
        if len(values) != len(x):
            raise ValueError(f"attribute {name!r}: {len(values)} values for {len(x)} rows")
    for start in range(0, len(x), rows_per_request):
        chunk = x[start : start + rows_per_request]
        instances: list[dict[str, Any]] = [
            {name: float(v) for name, v in zip(feature_names, row, strict=True)} for row in chunk
        ]
        for name, values in extra.items():
            for i, instance in enumerate(instances):
                instance[name] = values[start + i]
        answer = _json(
            await deployer.post(
                f"/v1/deployments/{deployment}/predict", json={"instances": instances}, headers=_h(token)
            )
        )
        for p in answer["predictions"]:
            served.append(
                Served(p["prediction_id"], int(answer["version"]), answer["variant"], p["output"], p["score"])
            )
    return served


class LabelPublisher:
    """Ground truth for served predictions as ``label.observed`` on vigil.labels, keyed by deployment (as the
    contract requires) — one producer kept open for a stream of outcomes."""

    def __init__(
        self,
        bootstrap: str,
        *,
        topic_prefix: str = "",
        actor: str = "system:demo-outcomes",
        signer: SigningKey | None = None,
    ) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **KafkaSecurity.from_env().client_kwargs())
        self._topic = f"{topic_prefix}{topics.LABELS}"
        self._actor = actor
        # Consumers apply only signed events (docs/security.md): by default the stack's local producer key.
        self._signer = signer if signer is not None else local_producer_key()

    async def __aenter__(self) -> LabelPublisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def publish(self, deployment: str, prediction_ids: Sequence[str], truth: Sequence[Any]) -> list[str]:
        """Publish the outcomes in events of at most :data:`LABELS_PER_EVENT`; returns the event ids."""
        ids = []
        for i in range(0, len(prediction_ids), LABELS_PER_EVENT):
            chunk = [
                ObservedLabel(prediction_id=p, label=float(t))
                for p, t in zip(prediction_ids[i : i + LABELS_PER_EVENT], truth[i : i + LABELS_PER_EVENT], strict=True)
            ]
            envelope = make_event(
                LabelObserved(deployment=deployment, labels=chunk), source="demo://outcomes", actor=self._actor
            )
            value = envelope.canonical_bytes()
            await self._producer.send_and_wait(
                self._topic, value, key=deployment.encode(), headers=self._signer.sign_values([value])[0]
            )
            ids.append(envelope.id)
        return ids


async def publish_labels(
    bootstrap: str,
    deployment: str,
    prediction_ids: Sequence[str],
    truth: Sequence[Any],
    *,
    topic_prefix: str = "",
    actor: str = "system:demo-outcomes",
) -> list[str]:
    """One batch of ground truth through a short-lived :class:`LabelPublisher`; returns the event ids."""
    async with LabelPublisher(bootstrap, topic_prefix=topic_prefix, actor=actor) as labels:
        return await labels.publish(deployment, prediction_ids, truth)


# ------------------------------------------------------------------------------------------------ observe
async def deployment(deployer: httpx.AsyncClient, token: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = _json(await deployer.get(f"/v1/deployments/{name}", headers=_h(token)))
    return body


async def wait_deployment(
    deployer: httpx.AsyncClient,
    token: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    *,
    what: str,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Poll the deployment until ``predicate`` holds for it; returns it."""

    async def probe() -> dict[str, Any] | None:
        dep = await deployment(deployer, token, name)
        return dep if predicate(dep) else None

    return await poll(probe, timeout_s=timeout_s, what=what)


async def wait_next_window(window_s: float, margin_s: float = 0.2) -> float:
    """Sleep until just after the next epoch-aligned window boundary (the monitor's windows); returns its start."""
    start = (np.floor(time.time() / window_s) + 1) * window_s
    await asyncio.sleep(max(0.0, start + margin_s - time.time()))
    return float(start)


async def audited_events(auditor: httpx.AsyncClient, token: str, event_type: str) -> list[dict[str, Any]]:
    """Full envelopes of every audited event of ``event_type`` (newest first, first page)."""
    entries = _json(await auditor.get("/v1/entries", params={"type": event_type}, headers=_h(token)))["items"]
    out = []
    for entry in entries:
        out.append(_json(await auditor.get(f"/v1/events/{entry['event_id']}", headers=_h(token)))["event"])
    return out


async def why(auditor: httpx.AsyncClient, token: str, event_id: str) -> dict[str, Any]:
    """The causal chain of an audited event, back to where it started."""
    body: dict[str, Any] = _json(await auditor.get(f"/v1/why/{event_id}", headers=_h(token)))
    return body


async def verify(auditor: httpx.AsyncClient, token: str) -> dict[str, Any]:
    """Recompute the audit chain and its checkpoints."""
    body: dict[str, Any] = _json(await auditor.get("/v1/verify", headers=_h(token)))
    return body
