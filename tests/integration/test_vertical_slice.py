"""The backbone's vertical slice through the real broker and Postgres.

data.updated (HTTP and straight on the topic) → registry stores the dataset version once per digest and emits
dataset.version.registered through its outbox → the auditor chains every event once → the chain for the dataset is
readable over HTTP and verifies.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from support.services import Tokens, eventually, make_tokens, running, settings_for
from support.signing import signed_headers
from vigil.auditor.app import make_app as make_auditor
from vigil.auditor.settings import AuditorSettings
from vigil.events import make_event
from vigil.events.catalog.data import DataUpdated
from vigil.registry.app import make_app as make_registry
from vigil.registry.settings import RegistrySettings

pytestmark = pytest.mark.integration


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def update_body(dataset: str, content: str) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "content_digest": digest(content),
        "uri": f"file:///data/{dataset}/{content}.csv",
        "columns": [{"name": "age", "type": "float"}, {"name": "bmi", "type": "float"}],
        "row_count": 1000,
        "producer": "ehr-export",
    }


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return make_tokens(tmp_path)


async def publish_upstream(bootstrap: str, prefix: str, update: DataUpdated) -> str:
    """An upstream system writing data.updated straight onto vigil.data, as the contract allows."""
    envelope = make_event(update, source="ehr://export-job", actor="system:ehr-export")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        value = envelope.canonical_bytes()
        await producer.send_and_wait(
            f"{prefix}vigil.data", value, key=update.dataset.encode(), headers=signed_headers(value)
        )
    finally:
        await producer.stop()
    return envelope.id


async def test_slice_http_and_topic_to_registry_and_audit(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tokens: Tokens
) -> None:
    common = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    async with (
        running(make_registry(settings_for(RegistrySettings, **common, dataset_roots=[Path("/data")]))) as registry,
        running(make_auditor(settings_for(AuditorSettings, **common))) as auditor,
    ):
        scientist = tokens.headers("scientist")

        # 1. Over HTTP: a new version, synchronously registered.
        r = await registry.client.post("/v1/data-updates", json=update_body("patients", "a"), headers=scientist)
        assert r.status_code == 201, r.text
        first = r.json()
        assert first["version"] == 1 and first["created"] is True

        # 2. The same content again: no second version.
        r = await registry.client.post("/v1/data-updates", json=update_body("patients", "a"), headers=scientist)
        assert r.status_code == 201
        assert r.json()["version"] == 1 and r.json()["created"] is False

        # 3. Straight on the topic: new content → version 2; identical content again → nothing new.
        upstream_id = await publish_upstream(kafka_bootstrap, topic_prefix, DataUpdated(**update_body("patients", "b")))
        await publish_upstream(kafka_bootstrap, topic_prefix, DataUpdated(**update_body("patients", "b")))

        async def versions() -> list[dict[str, Any]]:
            resp = await registry.client.get("/v1/datasets/patients/versions", headers=tokens.headers("viewer"))
            items: list[dict[str, Any]] = resp.json()["items"]
            return items if len(items) >= 2 else []

        items = await eventually(versions, what="version 2 from the topic")
        assert [v["version"] for v in items] == [1, 2]
        assert items[1]["source_event_id"] == upstream_id
        assert items[1]["parent_version"] == 1

        # 4. The auditor holds each event once: 4 data.updated + 2 dataset.version.registered.
        auditor_headers = tokens.headers("auditor")

        counts: list[int] = []

        async def chain() -> list[dict[str, Any]]:
            resp = await auditor.client.get(
                "/v1/entries", params={"subject_prefix": "dataset/patients"}, headers=auditor_headers
            )
            entries: list[dict[str, Any]] = resp.json()["items"]
            counts.append(len(entries))
            return entries if len(entries) >= 6 else []

        try:
            entries = await eventually(chain, what="six audit entries for dataset/patients")
        except AssertionError as exc:  # timed out once under a loaded CI run (2026-12-07): say where it stood
            raise AssertionError(
                f"{exc}; entries at the last look: {counts[-1:]}; auditor: {auditor.consumer_state()}"
            ) from exc
        types = sorted(e["event_type"] for e in entries)
        assert types == ["data.updated"] * 4 + ["dataset.version.registered"] * 2
        assert len({e["event_id"] for e in entries}) == 6

        # 5. "Why does version 2 exist?" walks back to the upstream event.
        registered_v2 = items[1]["registered_event_id"]
        why = (await auditor.client.get(f"/v1/why/{registered_v2}", headers=auditor_headers)).json()
        assert why["complete"] is True
        assert [e["event_id"] for e in why["chain"]] == [registered_v2, upstream_id]
        assert why["chain"][-1]["actor"] == "system:ehr-export"

        verify = (await auditor.client.get("/v1/verify", headers=auditor_headers)).json()
        assert verify["ok"] is True and verify["entries_checked"] >= 6

        # Nothing was dead-lettered on the way, by either consumer.
        for service in (registry, auditor):
            dlq = (await service.client.get("/v1/dlq", headers=tokens.headers("viewer"))).json()
            assert dlq["items"] == []
