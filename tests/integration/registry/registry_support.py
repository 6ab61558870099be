"""Helpers of the registry's integration tests: a handle on a running registry and event builders.

Imported by the test modules (pytest puts this directory on sys.path); the fixture lives in conftest.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.kafka import produce_events, read_all
from support.services import RunningService, Tokens
from vigil.events import Envelope, make_event
from vigil.events.catalog.common import DatasetRef
from vigil.events.catalog.training import Environment, TrainingCompleted


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Registry:
    """A running registry plus what a test needs to talk to it and to the topics around it."""

    service: RunningService
    tokens: Tokens
    bootstrap: str
    prefix: str
    artifact_root: Path

    @property
    def client(self):  # type: ignore[no-untyped-def]
        return self.service.client

    def h(self, role: str) -> dict[str, str]:
        return self.tokens.headers(role)

    async def publish(self, topic: str, *events: Envelope, key: str) -> None:
        await produce_events(self.bootstrap, f"{self.prefix}{topic}", list(events), key=key.encode())

    async def events_on(self, topic: str, *, expect: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Decoded envelopes on one of the test's topics (read from the beginning)."""
        import orjson

        records = await read_all(self.bootstrap, f"{self.prefix}{topic}", expect=expect, timeout=timeout)
        return [orjson.loads(r.value) for r in records]

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.service.runtime.pool.acquire() as conn:
            return await conn.fetchval(sql, *args)

    async def register_dataset(self, name: str, content: str, columns: list[dict[str, str]]) -> dict[str, Any]:
        body = {
            "dataset": name,
            "content_digest": sha(content),
            "uri": f"file:///data/{name}/{content}.parquet",
            "columns": columns,
            "row_count": 1000,
            "producer": "ehr-export",
        }
        r = await self.client.post("/v1/data-updates", json=body, headers=self.h("scientist"))
        assert r.status_code == 201, r.text
        version = await self.client.get(f"/v1/datasets/{name}/versions/{r.json()['version']}", headers=self.h("viewer"))
        result: dict[str, Any] = version.json()
        return result


def training_completed(
    model: str,
    run_id: str,
    *,
    metrics: dict[str, float],
    datasets: list[dict[str, Any]],
    signature: dict[str, str] | None = None,
    job_id: str | None = None,
) -> Envelope:
    """A training.completed event as the trainer would write it."""
    payload = TrainingCompleted(
        model=model,
        job_id=job_id or f"job-{run_id}",
        attempt=1,
        run_id=run_id,
        params={"max_depth": 6, "hidden": [64, 32]},
        metrics=metrics,
        artifact_digest=sha(f"artifact-{run_id}"),
        artifact_uri=f"vigil-artifact://{sha(f'artifact-{run_id}')}",
        artifact_format="npz",
        artifact_size_bytes=1234,
        signature=[{"name": n, "type": t} for n, t in (signature or {"age": "float", "bmi": "float"}).items()],
        datasets=[
            DatasetRef(dataset=d["dataset"], version=d["version"], content_digest=d["content_digest"], uri=d["uri"])
            for d in datasets
        ],
        code_version="git:abc123",
        environment=Environment(python="3.11.7", platform="linux", packages={"numpy": "2.0"}),
        duration_s=12.5,
    )
    return make_event(payload, source="vigil://trainer", actor="service:trainer")
