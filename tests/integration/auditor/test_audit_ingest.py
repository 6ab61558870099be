"""Ingest through the real broker and Postgres: every control-plane event once, streams as digests whose roots
match the records on the topic, everything republished on vigil.audit, checkpoints signed, reads recorded."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from audit_support import all_entries, auditor, event, publisher_caught_up, topic_of

from support.kafka import produce_events, read_all
from support.services import Tokens, eventually, make_tokens
from vigil.events import Envelope, decode_event, registered, topics

pytestmark = pytest.mark.integration

STREAM_COUNTS = {"metric.observed": 23, "prediction.logged": 4, "label.observed": 3}


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 MTH over leaf hashes (independent of the auditor's code)."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


async def test_every_event_once_streams_digested_and_republished(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    headers = tokens.headers("auditor")
    control_types = sorted(t for (t, _v), cls in registered().items() if cls.TOPIC in topics.CONTROL_PLANE)
    assert len(control_types) >= 20
    control: list[Envelope] = [event(t) for t in control_types for _ in range(2)]
    streams = {t: [event(t) for _ in range(n)] for t, n in STREAM_COUNTS.items()}

    async with auditor(
        dsn=fresh_db, bootstrap=kafka_bootstrap, prefix=topic_prefix, tokens=tokens, home=tmp_path
    ) as service:
        by_topic: dict[str, list[Envelope]] = {}
        for e in control:
            by_topic.setdefault(topic_of(e), []).append(e)
        for topic, events in by_topic.items():
            await produce_events(kafka_bootstrap, topic_prefix + topic, events)
            await produce_events(kafka_bootstrap, topic_prefix + topic, events[:3])  # redelivered: no new entries
        for events in streams.values():
            await produce_events(kafka_bootstrap, topic_prefix + topic_of(events[0]), events, key=None)

        async def settled() -> list[dict[str, Any]]:
            entries = await all_entries(service, headers)
            digests = [e for e in entries if e["event_type"] == "audit.stream_digest"]
            plane = [e for e in entries if e["topic"] in topics.CONTROL_PLANE]
            counted = 0
            for d in digests:
                counted += (await service.client.get(f"/v1/events/{d['event_id']}", headers=headers)).json()["event"][
                    "data"
                ]["count"]
            return entries if len(plane) >= len(control) and counted >= sum(STREAM_COUNTS.values()) else []

        entries = await eventually(settled, timeout=60, what="every event audited")

        # 1. Each control-plane event exactly once; nothing else from the control plane.
        plane_ids = Counter(e["event_id"] for e in entries if e["topic"] in topics.CONTROL_PLANE)
        assert plane_ids == Counter(e.id for e in control)

        # 2. Stream digests: counts add up and each root equals the root recomputed from the topic's records.
        digests = []
        for d in (e for e in entries if e["event_type"] == "audit.stream_digest"):
            digests.append((await service.client.get(f"/v1/events/{d['event_id']}", headers=headers)).json())
        for kind, events in streams.items():
            topic = topic_of(events[0])
            mine = [d["event"]["data"] for d in digests if d["event"]["data"]["topic"] == topic]
            assert sum(d["count"] for d in mine) == len(events)
            records = await read_all(kafka_bootstrap, topic_prefix + topic, expect=len(events))
            for d in mine:
                covered = sorted(
                    (
                        r
                        for r in records
                        if r.partition == d["partition"] and d["from_offset"] <= r.offset <= d["to_offset"]
                    ),
                    key=lambda r: r.offset,
                )
                assert len(covered) == d["count"]
                leaves = [_leaf(hashlib.sha256(r.value).digest()) for r in covered]
                assert _mth(leaves).hex() == d["merkle_root"], kind
        assert all(d["retention_class"] == "stream_digest" for d in digests)
        assert {e["retention_class"] for e in entries if e["topic"] in topics.CONTROL_PLANE} == {"control_plane"}

        # 3. A checkpoint covers the log and the whole thing verifies (chain, roots, signatures).
        async def checkpointed() -> dict[str, Any] | None:
            head = max(e["seq"] for e in entries)
            items = (await service.client.get("/v1/checkpoints", headers=headers)).json()["items"]
            return items[-1] if items and items[-1]["to_seq"] >= head else None

        await eventually(checkpointed, what="a checkpoint over the head")
        report = (await service.client.get("/v1/verify", headers=headers)).json()
        assert report["ok"] is True, report
        assert report["checkpoints_checked"] >= 2 and report["entries_checked"] >= len(entries)

        # 4. vigil.audit carries one audit.entry per entry (seq once each) and the checkpoints.
        async def outbox_drained() -> bool:
            pending = await service.runtime.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            return pending == 0

        await eventually(outbox_drained, what="the auditor's outbox drained")
        await eventually(lambda: publisher_caught_up(service), what="audit.entry published up to the head")
        total = await service.runtime.pool.fetchval("SELECT count(*) FROM audit_log")
        published = await read_all(kafka_bootstrap, topic_prefix + topics.AUDIT, expect=10**9, timeout=8)
        decoded = [decode_event(r.value) for r in published]
        entry_seqs = Counter(p.seq for env, p in decoded if env.type == "audit.entry")  # type: ignore[attr-defined]
        assert set(entry_seqs.values()) == {1}
        assert set(entry_seqs) >= set(range(1, total + 1)) - set(range(total - 5, total + 1))  # reads keep adding
        assert any(env.type == "audit.checkpoint" for env, _ in decoded)
        assert sum(1 for env, _ in decoded if env.type == "audit.stream_digest") == len(digests)
        db_hashes = dict(await service.runtime.pool.fetch("SELECT seq, entry_hash FROM audit_log"))
        for env, p in decoded:
            if env.type == "audit.entry":
                assert p.entry_hash == db_hashes[p.seq]  # type: ignore[attr-defined]

        # 5. Our reads were themselves audited: who, which route, status — including a miss.
        missing = await service.client.get("/v1/events/does-not-exist", headers=headers)
        assert missing.status_code == 404
        denied = await service.client.get("/v1/verify", headers=tokens.headers("viewer"))
        assert denied.status_code == 403
        access = await all_entries(service, headers, type="access.recorded")
        records = []
        for a in access:
            records.append((await service.client.get(f"/v1/events/{a['event_id']}", headers=headers)).json())
        seen = {(r["event"]["data"]["route"], r["event"]["data"]["status"], r["actor"]) for r in records}
        assert ("/v1/verify", 200, "user:test-auditor") in seen
        assert ("/v1/events/{event_id}", 404, "user:test-auditor") in seen
        assert ("/v1/verify", 403, "user:test-viewer") in seen
        assert all(r["retention_class"] == "access" for r in access)

        # Nothing dead-lettered.
        dlq = (await service.client.get("/v1/dlq", headers=tokens.headers("admin"))).json()
        assert dlq["items"] == []
