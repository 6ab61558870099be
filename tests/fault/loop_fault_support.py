"""The harness behind ``test_loop_faults.py``: one real stack (six ``python -m vigil.<service>`` processes, its own
embedded broker and Postgres), the closed loop driven over HTTP, and a ledger of everything sent in and every fault
injected, so the final test can compare what went in with what the platform decided and audited.

Why a ledger rather than fixed numbers: which tests run depends on the selection (``-m "not slow"`` drops some
rounds), so the expected figures are derived from what this run actually did — never hard-coded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from support.signing import signed_headers
from vigil.demo import loop
from vigil.events import Envelope, make_event, new_id, topics
from vigil.events.catalog.data import DataUpdated
from vigil.events.catalog.streams import LabelObserved, ObservedLabel
from vigil.monitor.figures import iso
from vigil.stack.supervisor import RunningStack
from vigil.trainer.examples import patient_risk

T = TypeVar("T")

ACTOR = "system:fault-suite"
MODEL = "patient-risk-clf"
DEPLOYMENT = "patient-risk"
WINDOW_S = 8.0

#: Settings for every service process: short windows, fast ticks and leases — the values the in-process e2e loop
#: uses in CI — so a round of the loop takes seconds, not minutes.
STACK_ENV: dict[str, str] = {
    "VIGIL_ENVIRONMENT": "test",
    "VIGIL_POSTGRES_FSYNC": "off",
    "VIGIL_KAFKA_TOPIC_PARTITIONS": "2",
    "VIGIL_KAFKA_SESSION_TIMEOUT_MS": "6000",
    "VIGIL_CONSUMER_RETRY_BACKOFF_MS": "20",
    "VIGIL_OUTBOX_POLL_INTERVAL_MS": "50",
    "VIGIL_BROKER_EPOCH_CHECK_INTERVAL_MS": "500",
    "VIGIL_SCHEDULER_TICK_INTERVAL_MS": "100",
    "VIGIL_TRAINER_LEASE_S": "3",
    "VIGIL_TRAINER_POLL_INTERVAL_MS": "200",
    "VIGIL_TRAINER_WORKERS": "1",
    "VIGIL_ROLLOUT_TICK_INTERVAL_MS": "100",
    "VIGIL_GATEWAY_LOG_FLUSH_MS": "100",
    "VIGIL_WINDOW_S": str(WINDOW_S),
    "VIGIL_WINDOW_GRACE_S": "3",
    "VIGIL_TICK_S": "0.25",
    "VIGIL_ROLLING_WINDOWS": "3",
    "VIGIL_POLICY_CACHE_S": "0",
    "VIGIL_AUDIT_CHECKPOINT_INTERVAL_S": "5",
}

SCHEDULE: dict[str, Any] = {
    "datasets": [patient_risk.DATASET],
    "entrypoint": "vigil.trainer.examples.patient_risk:train",
    # Enough epochs that a run lasts a few seconds: the trainer is killed while one is in flight.
    "params": {"epochs": 4000, "seed": 3},
    "code_version": "git:fault",
    "debounce_s": 0.5,
    "max_attempts": 3,
    "backoff_base_s": 0.2,
    "timeout_s": 120,
    "memory_limit_mb": 2048,
}

DEPLOYMENT_BODY: dict[str, Any] = {
    "name": DEPLOYMENT,
    "model": MODEL,
    "strategy": "canary",
    "auto_deploy": "auto",
    "min_samples": 50,
    # No analysis step: each new version is promoted by the deployer's durable timers alone, so every round of the
    # loop ends in exactly one promotion whatever the monitor thinks.
    "steps": [
        {"kind": "set_weight", "weight": 50},
        {"kind": "pause", "duration_s": 1},
        {"kind": "set_weight", "weight": 100},
    ],
}

#: The monitor judges and keeps windows but asks for nothing: its decisions would otherwise race the rounds.
MONITOR_POLICY: dict[str, Any] = {
    "drift": {"min_samples": 100},
    "actions": {"rollback_on": [], "retrain_on_drift_windows": None},
}

#: Which services consume which topic through a consumer that dead-letters. A poison record on a topic is expected
#: once in the DLQ of every service listed here.
CONSUMERS: dict[str, tuple[str, ...]] = {
    topics.DATA: ("registry", "scheduler", "auditor"),
    topics.LABELS: ("monitor", "auditor"),
}


@dataclass
class Fault:
    """One injected fault and how long the loop took to complete its next step after it."""

    kind: str
    target: str
    detail: dict[str, Any] = field(default_factory=dict)
    ready_s: float | None = None  # kill → the restarted process (or infrastructure) answers again
    recovered_s: float | None = None  # kill → the loop's next step observed done


@dataclass(frozen=True)
class Poison:
    topic: str
    reason: str
    raw: bytes


@dataclass
class Ledger:
    """Everything the test sent into the platform and every fault it injected."""

    announcements: list[str] = field(default_factory=list)  # data.updated event ids (distinct)
    dataset_versions: list[int] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # event ids re-sent as the same bytes
    poison: list[Poison] = field(default_factory=list)
    served: list[loop.Served] = field(default_factory=list)
    labelled: set[str] = field(default_factory=set)  # prediction ids we sent ground truth for
    label_events: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "announcements": len(self.announcements),
            "dataset_versions": self.dataset_versions,
            "duplicates_sent": len(self.duplicates),
            "poison_sent": [{"topic": p.topic, "reason": p.reason} for p in self.poison],
            "predictions_served": len(self.served),
            "labels_sent": len(self.labelled),
            "faults": [asdict(f) for f in self.faults],
            **self.figures,
        }


class LoopHarness:
    """Drives the loop over real HTTP against a :class:`RunningStack` and keeps the :class:`Ledger`."""

    def __init__(self, stack: RunningStack, data_dir: Path) -> None:
        self.stack = stack
        self.token = stack.admin_token
        self.data_dir = data_dir
        self.ledger = Ledger()
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._raw: dict[str, bytes] = {}  # event id → the exact bytes we produced (for duplicates)

    # ------------------------------------------------------------------------------------------ plumbing
    def client(self, service: str) -> httpx.AsyncClient:
        """A client for one service. Made lazily per event loop use; transport errors are the caller's to absorb
        (a killed service refuses connections until it is back)."""
        if service not in self._clients:
            self._clients[service] = httpx.AsyncClient(
                base_url=self.stack.url(service),
                timeout=30.0,
                trust_env=False,
                headers={"Authorization": f"Bearer {self.token}"},
            )
        return self._clients[service]

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()

    async def get(self, service: str, path: str, **params: Any) -> Any | None:
        """GET a JSON body, or None while the service is away (connection refused, reset, 5xx)."""
        try:
            r = await self.client(service).get(path, params=params)
        except httpx.TransportError:
            return None
        if r.status_code >= 500 or r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    async def get_all(self, service: str, path: str, cursor: str = "after", **params: Any) -> list[dict[str, Any]]:
        """Every item of a paginated list route (keyset cursor in ``next``)."""
        items: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            query = {**params, "limit": 500}
            if after is not None:
                query[cursor] = after
            page = await self.get(service, path, **query)
            if page is None:
                raise AssertionError(f"GET {service}{path} failed")
            items.extend(page["items"])
            after = page.get("next")
            if not after:
                return items

    async def until(self, probe: Callable[[], Awaitable[T | None]], *, timeout: float, what: str) -> T:
        """Poll ``probe`` (transport errors count as "not yet") until it returns something truthy."""

        async def guarded() -> T | None:
            try:
                return await probe()
            except httpx.TransportError:
                return None

        return await loop.poll(guarded, timeout_s=timeout, what=what, interval=0.3)

    # ------------------------------------------------------------------------------------------ faults
    async def kill(self, service: str) -> float:
        """kill -9 one service process; returns the monotonic time of the kill."""
        code = await asyncio.to_thread(self.stack.kill_service, service)
        assert code == -9, f"{service} exited with {code}, not SIGKILL"
        return time.monotonic()

    async def restart(self, service: str) -> float:
        """Start a killed service again and wait until it is ready; returns the monotonic time it was."""
        await asyncio.to_thread(self.stack.start_service, service, ready_timeout=120.0)
        # Old keep-alive connections point at the dead process.
        if service in self._clients:
            await self._clients.pop(service).aclose()
        return time.monotonic()

    # ------------------------------------------------------------------------------------------ the loop
    async def configure(self) -> None:
        await loop.put_schedule_policy(self.client("scheduler"), self.token, MODEL, SCHEDULE)
        await loop.create_deployment(self.client("deployer"), self.token, DEPLOYMENT_BODY)
        await loop.put_monitor_policy(self.client("monitor"), self.token, DEPLOYMENT, MONITOR_POLICY)

    def dataset(self, n: int) -> dict[str, Any]:
        """Dataset version ``n``: same population, a different sample (so the gates pass and each is new)."""
        return patient_risk.write_dataset(self.data_dir / f"v{n}.csv", rows=1500, seed=1000 + n)

    async def announce(self, n: int, *, via: str) -> str:
        """Announce dataset version ``n`` through the registry's API or straight onto vigil.data."""
        body = self.dataset(n)
        if via == "http":
            event_id = await loop.announce(self.client("registry"), self.token, body)
        else:
            envelope = make_event(DataUpdated(**body), source="test://upstream", actor=ACTOR)
            raw = envelope.canonical_bytes()
            await self.produce(topics.DATA, [raw], key=body["dataset"])
            event_id = envelope.id
            self._raw[event_id] = raw
        self.ledger.announcements.append(event_id)
        self.ledger.dataset_versions.append(n)
        return event_id

    async def produce(self, topic: str, values: list[bytes], *, key: str) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.stack.bootstrap_servers)
        await producer.start()
        try:
            for value in values:  # signed by the key allowed to produce it, as a real upstream would
                await producer.send_and_wait(topic, value, key=key.encode(), headers=signed_headers(value))
        finally:
            await producer.stop()

    async def resend(self, event_id: str, topic: str, *, key: str) -> None:
        """Deliver an event a second time: the very same bytes, at a new offset."""
        await self.produce(topic, [self._raw[event_id]], key=key)
        self.ledger.duplicates.append(event_id)

    async def inject_poison(self, topic: str, template: Envelope, key: str) -> list[Poison]:
        """Three records no consumer can apply: malformed JSON, an unknown schema version, an envelope missing
        required attributes (the last two built from ``template``, a good event of the topic). Each has its own
        bytes and id, so each is its own dead letter."""
        unknown = template.model_dump(mode="json") | {"id": new_id()}
        unknown["dataschema"] = unknown["dataschema"].replace("/v1.json", "/v99.json")
        missing = template.model_dump(mode="json") | {"id": new_id()}
        for attribute in ("source", "specversion", "time"):
            missing.pop(attribute)
        batch = [
            Poison(topic, "malformed_json", b'{"id": "not-json", "type": ' + str(time.time_ns()).encode()),
            Poison(topic, "unknown_version", json.dumps(unknown).encode()),
            Poison(topic, "schema_violation", json.dumps(missing).encode()),
        ]
        await self.produce(topic, [p.raw for p in batch], key=key)
        self.ledger.poison.extend(batch)
        return batch

    def data_template(self) -> Envelope:
        return make_event(DataUpdated(**self.dataset(900)), source="test://poison", actor=ACTOR)

    def label_template(self) -> Envelope:
        label = ObservedLabel(prediction_id=new_id(), label=1.0)
        return make_event(LabelObserved(deployment=DEPLOYMENT, labels=[label]), source="test://poison", actor=ACTOR)

    async def deployment(self) -> dict[str, Any] | None:
        body: dict[str, Any] | None = await self.get("deployer", f"/v1/deployments/{DEPLOYMENT}")
        return body

    async def wait_serving(self, version: int, *, timeout: float = 180.0) -> dict[str, Any]:
        """Until ``version`` is stable with no rollout in flight (promoted, or deployed first)."""

        async def probe() -> dict[str, Any] | None:
            dep = await self.deployment()
            if dep and dep["stable_version"] == version and dep["rollout"] is None:
                return dep
            return None

        return await self.until(probe, timeout=timeout, what=f"v{version} serving")

    async def serve(self, rows: int, *, seed: int, rows_per_request: int = 20) -> list[loop.Served]:
        """Traffic through the gateway; every answered row goes into the ledger."""
        x, _ = patient_risk.generate(rows, seed=seed)
        served = await loop.send_traffic(
            self.client("deployer"), self.token, DEPLOYMENT, x, patient_risk.FEATURES, rows_per_request=rows_per_request
        )
        self.ledger.served.extend(served)
        return served

    async def label(self, served: list[loop.Served], *, seed: int) -> list[str]:
        """Ground truth for served rows as ``label.observed`` (as :func:`vigil.demo.loop.publish_labels` sends it),
        keeping the bytes so one can be delivered twice."""
        _, y = patient_risk.generate(len(served), seed=seed)
        envelopes = []
        for i in range(0, len(served), loop.LABELS_PER_EVENT):
            chunk = [
                ObservedLabel(prediction_id=s.prediction_id, label=float(t))
                for s, t in zip(served[i : i + loop.LABELS_PER_EVENT], y[i : i + loop.LABELS_PER_EVENT], strict=True)
            ]
            envelopes.append(
                make_event(LabelObserved(deployment=DEPLOYMENT, labels=chunk), source="test://outcomes", actor=ACTOR)
            )
        raws = [e.canonical_bytes() for e in envelopes]
        await self.produce(topics.LABELS, raws, key=DEPLOYMENT)
        for envelope, raw in zip(envelopes, raws, strict=True):
            self._raw[envelope.id] = raw
        self.ledger.labelled.update(s.prediction_id for s in served)
        self.ledger.label_events.extend(e.id for e in envelopes)
        return [e.id for e in envelopes]

    async def monitor_rows(self, stream: str, outcome: str = "applied") -> float:
        """The monitor's ``vigil_monitor_rows_total`` for one stream (since its process started)."""
        try:
            r = await self.client("monitor").get("/metrics")
        except httpx.TransportError:
            return -1.0
        want = f'vigil_monitor_rows_total{{outcome="{outcome}",stream="{stream}"}} '
        for line in r.text.splitlines():
            if line.startswith(want):
                return float(line[len(want) :])
        return 0.0

    async def monitor_metrics(self, prefix: str = "vigil_monitor_") -> dict[str, float]:
        """The monitor's own Prometheus samples (since its process started), for diagnostics in figures."""
        try:
            r = await self.client("monitor").get("/metrics")
        except httpx.TransportError:
            return {}
        out: dict[str, float] = {}
        for line in r.text.splitlines():
            if line.startswith(prefix) and "_created" not in line:
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    async def wait_monitor_applied(self, stream: str, at_least: float, *, timeout: float = 90.0) -> None:
        """Until the monitor has applied ``at_least`` rows of ``stream`` (predictions before their labels: the
        outcome of a prediction is only known after it was served and seen)."""

        async def probe() -> bool:
            return await self.monitor_rows(stream) >= at_least

        await self.until(probe, timeout=timeout, what=f"the monitor applying {at_least:.0f} {stream} rows")

    async def windows(self) -> list[dict[str, Any]]:
        """Closed tumbling windows of the deployment (every version and variant)."""
        return [
            w
            for w in await self.get_all("monitor", "/v1/windows", deployment=DEPLOYMENT, kind="tumbling")
            if w["figures"].get("kind", "tumbling") == "tumbling"
        ]

    async def runs(self) -> list[dict[str, Any]]:
        return await self.get_all("trainer", "/v1/runs", model=MODEL)

    async def jobs(self) -> list[dict[str, Any]]:
        return await self.get_all("scheduler", "/v1/jobs", model=MODEL)

    async def audit_entries(self, **filters: Any) -> list[dict[str, Any]]:
        return await self.get_all("auditor", "/v1/entries", **filters)

    async def dlq(self, service: str) -> list[dict[str, Any]]:
        return await self.get_all(service, "/v1/dlq")


async def logged_batches(bootstrap: str, *, idle_s: float = 3.0) -> list[tuple[str, dict[str, Any]]]:
    """(event id, payload) of every prediction.logged on vigil.predictions so far, in log order (a record sent
    twice appears twice; poison records are skipped)."""
    consumer = AIOKafkaConsumer(
        topics.PREDICTIONS, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    batches: list[tuple[str, dict[str, Any]]] = []
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for record in records:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        event = json.loads(record.value)
                        if isinstance(event["data"]["prediction_ids"], list):
                            batches.append((str(event["id"]), event["data"]))
                    quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return batches


async def logged_prediction_ids(bootstrap: str, *, idle_s: float = 3.0) -> list[str]:
    """Every prediction id on vigil.predictions so far, in log order (duplicates kept: they are what we look for)."""
    return [i for _, b in await logged_batches(bootstrap, idle_s=idle_s) for i in b["prediction_ids"]]


def expected_window_counts(
    batches: list[tuple[str, dict[str, Any]]], labelled: set[str], window_s: float
) -> dict[tuple[int, str, str], tuple[int, int]]:
    """(version, variant, window start as the monitor writes it) → (predictions, labelled predictions) that the
    logged batches put in each window: a batch belongs to the window of its ``first_at`` (docs/monitor.md), and a
    batch sent twice (same event id) counts once."""
    window_ms = round(window_s * 1000)
    out: dict[tuple[int, str, str], tuple[int, int]] = {}
    for b in dict(batches).values():
        at_ms = datetime.fromisoformat(b["first_at"]).timestamp() * 1000
        start = math.floor(at_ms / window_ms) * window_ms
        key = (int(b["version"]), str(b["variant"]), iso(start / 1000))
        rows, labels = out.get(key, (0, 0))
        ids = b["prediction_ids"]
        out[key] = (rows + len(ids), labels + sum(1 for i in ids if i in labelled))
    return out


def summarise(values: list[float]) -> dict[str, float]:
    """Median and max of a list of durations (seconds), rounded for the report."""
    if not values:
        return {}
    return {"median_s": round(float(np.median(values)), 1), "max_s": round(max(values), 1)}
