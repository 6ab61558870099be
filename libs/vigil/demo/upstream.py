"""A synthetic upstream data system: writes dataset files and announces them as ``data.updated``.

Half of the announcements go through the registry's HTTP API, half straight onto ``vigil.data`` — the two ways the
upstream contract allows — and now and then one is repeated verbatim, to show that the same content never becomes
a second version.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from aiokafka import AIOKafkaProducer

from vigil.events import make_event
from vigil.events.catalog.data import ColumnSpec, DataUpdated

COLUMNS = [("age", "float"), ("bmi", "float"), ("systolic_bp", "float"), ("hba1c", "float")]


@dataclass(frozen=True)
class Announcement:
    dataset: str
    version_hint: int
    path: Path
    update: DataUpdated
    via: str  # "http" or "topic"


def write_dataset(directory: Path, dataset: str, n: int, *, rows: int = 2000, shift: float = 0.0) -> DataUpdated:
    """A seeded synthetic patient table (CSV); ``shift`` moves the feature means to simulate drift."""
    rng = np.random.default_rng(n)
    data = np.column_stack(
        [
            rng.normal(55 + 5 * shift, 12, rows),
            rng.normal(27 + shift, 4, rows),
            rng.normal(128 + 6 * shift, 15, rows),
            rng.normal(5.8 + 0.3 * shift, 0.7, rows),
        ]
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dataset}-{n:04d}.csv"
    header = ",".join(c for c, _ in COLUMNS)
    np.savetxt(path, data, delimiter=",", header=header, comments="", fmt="%.4f")
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return DataUpdated(
        dataset=dataset,
        content_digest=digest,
        uri=path.resolve().as_uri(),
        columns=[ColumnSpec(name=c, type=t) for c, t in COLUMNS],
        row_count=rows,
        producer="demo-ehr-export",
    )


def announce_http(client: httpx.Client, registry_url: str, token: str, update: DataUpdated) -> dict[str, Any]:
    """POST the update to the registry; returns its answer (version, created, event id)."""
    response = client.post(
        f"{registry_url}/v1/data-updates",
        json=update.model_dump(mode="json"),
        headers={"Authorization": f"Bearer {token}"},
    )
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


async def announce_topic(bootstrap: str, update: DataUpdated, topic: str = "vigil.data") -> str:
    """Publish the update straight on the topic, as an upstream system with Kafka access would."""
    envelope = make_event(update, source="demo://ehr-export", actor="system:demo-ehr-export")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, envelope.canonical_bytes(), key=update.dataset.encode())
    finally:
        await producer.stop()
    return envelope.id
