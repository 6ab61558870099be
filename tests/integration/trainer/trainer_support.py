"""Helpers shared by the scheduler and trainer tests: datasets, policies, raw events in and out of the broker."""

from __future__ import annotations

import asyncio
import contextlib
import stat
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from support.services import Tokens, eventually
from support.signing import signed_headers
from vigil.events import Envelope, EventPayload, decode_event, make_event
from vigil.events.catalog.data import DatasetVersionRegistered
from vigil.trainer.examples import patient_risk

PROBE = "vigil.trainer.examples.probe:train"


def patient_dataset(directory: Path, *, rows: int = 300, seed: int = 0, drift: float = 0.0) -> dict[str, Any]:
    """A small real dataset file (patient-risk CSV) and its data.updated body."""
    return patient_risk.write_dataset(directory / f"patients-{seed}-{drift}.csv", rows=rows, seed=seed, drift=drift)


def registered(dataset: str, version: int, body: dict[str, Any]) -> DatasetVersionRegistered:
    """The registry's announcement of a dataset version (what the scheduler consumes)."""
    return DatasetVersionRegistered(
        dataset=dataset,
        version=version,
        content_digest=body["content_digest"],
        uri=body["uri"],
        row_count=body.get("row_count", 0),
        producer="test",
    )


def fake_registered(dataset: str, version: int) -> DatasetVersionRegistered:
    """A dataset version whose file does not exist (enough for scheduler-only tests)."""
    digest = "sha256:" + f"{version:064x}"
    return DatasetVersionRegistered(
        dataset=dataset, version=version, content_digest=digest, uri=f"file:///nowhere/{dataset}/{version}.csv",
        row_count=10, producer="test",
    )  # fmt: skip


async def publish(
    bootstrap: str, prefix: str, payloads: list[EventPayload], *, actor: str = "system:test"
) -> list[Envelope]:
    """Write events onto their topics, keyed like the outbox keys them; returns the envelopes."""
    envelopes = [make_event(p, source="test://upstream", actor=actor) for p in payloads]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for payload, envelope in zip(payloads, envelopes, strict=True):
            value = envelope.canonical_bytes()
            await producer.send_and_wait(
                f"{prefix}{payload.TOPIC}", value, key=payload.key().encode(), headers=signed_headers(value)
            )
    finally:
        await producer.stop()
    return envelopes


async def read_events(bootstrap: str, prefix: str, topic: str, *, idle_s: float = 2.0) -> list[Envelope]:
    """Every event on a topic so far (read from the start until nothing new arrives for ``idle_s``)."""
    consumer = AIOKafkaConsumer(
        f"{prefix}{topic}", bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    out: list[Envelope] = []
    try:
        quiet_since = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - quiet_since < idle_s:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for record in records:
                    with contextlib.suppress(Exception):
                        envelope, _payload = decode_event(record.value)
                        out.append(envelope)
                    quiet_since = asyncio.get_running_loop().time()
    finally:
        await consumer.stop()
    return out


def of_job(events: list[Envelope], job_id: str, event_type: str) -> list[Envelope]:
    return [e for e in events if e.type == event_type and e.data.get("job_id") == job_id]


def policy(datasets: list[str], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "datasets": datasets,
        "entrypoint": PROBE,
        "params": {},
        "code_version": "git:test",
        "debounce_s": 0,
        "max_concurrent": 1,
        "max_attempts": 1,
        "backoff_base_s": 0.2,
        "backoff_max_s": 1,
        "timeout_s": 60,
    }
    body.update(overrides)
    return body


async def put_policy(client: httpx.AsyncClient, tokens: Tokens, model: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.put(f"/v1/policies/{model}", json=body, headers=tokens.headers("scientist"))
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def jobs(client: httpx.AsyncClient, tokens: Tokens, **params: Any) -> list[dict[str, Any]]:
    r = await client.get("/v1/jobs", params={"limit": 500, **params}, headers=tokens.headers("viewer"))
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def job(client: httpx.AsyncClient, tokens: Tokens, job_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/jobs/{job_id}", headers=tokens.headers("viewer"))
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def wait_job(
    client: httpx.AsyncClient, tokens: Tokens, job_id: str, states: set[str], *, timeout: float = 60
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await job(client, tokens, job_id)
        return found if found["state"] in states else None

    result = await eventually(probe, timeout=timeout, interval=0.3, what=f"job {job_id} in {sorted(states)}")
    assert result is not None
    return result


async def trigger(
    client: httpx.AsyncClient, tokens: Tokens, model: str, params: dict[str, Any] | None = None, *, force: bool = False
) -> httpx.Response:
    return await client.post(
        f"/v1/policies/{model}/trigger",
        json={"params": params or {}, "force": force},
        headers=tokens.headers("scientist"),
    )


def trainer_settings(
    cls: type[Any], tmp: Path, *, dsn: str, bootstrap: str, prefix: str, tokens: Tokens, **overrides: Any
) -> Any:
    """Trainer settings for a test: short leases, fast polling, artifacts and scratch space under ``tmp``."""
    from support.services import settings_for

    values: dict[str, Any] = {
        "trainer_lease_s": 3.0,
        "trainer_poll_interval_ms": 200,
        "trainer_workers": 2,
        "artifact_root": tmp / "artifacts",
        "trainer_work_dir": tmp / "work",
        "home": tmp,
        # Datasets live beside the trainers' homes under the test's tmp_path (tests may pass tmp_path / "a").
        "trainer_dataset_roots": [tmp, tmp.parent],
    }
    values.update(overrides)
    return settings_for(cls, dsn=dsn, bootstrap=bootstrap, prefix=prefix, tokens=tokens, **values)


def marker_directory(path: Path) -> Path:
    """A directory the probe may leave its markers in. Training runs in the sandbox under its own uid, which may
    write nowhere outside its work directory unless let: so this one is world-writable (sticky) and reachable."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o1777)
    for ancestor in path.parents:
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            ancestor.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    return path


def markers(directory: Path) -> list[str]:
    """Executions recorded by the probe entrypoint (``<job>.<run>`` per execution)."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []
