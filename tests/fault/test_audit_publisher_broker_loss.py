"""The broker loses its log (the embedded broker keeps it in memory): the ``audit.entry`` publisher rewinds its
cursor through the runtime's ``on_broker_loss`` hook and every entry is on the new vigil.audit again, under the
same event ids."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from support.kafka import produce_events, read_all
from support.services import RunningService, Tokens, eventually, make_tokens, running, settings_for
from support.testinfra import KafkaUnderTest
from vigil.auditor.app import make_app
from vigil.auditor.feed import entry_event_id
from vigil.auditor.settings import AuditorSettings
from vigil.events import Envelope, decode_event, make_event, topics
from vigil.events.catalog.data import DataUpdated

pytestmark = pytest.mark.fault


async def test_broker_loss_republishes_every_entry_with_the_same_ids(
    kafka_bootstrap: str, broker_control: KafkaUnderTest, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    before = [data_updated() for _ in range(25)]
    settings = settings_for(
        AuditorSettings, dsn=fresh_db, bootstrap=kafka_bootstrap, prefix=topic_prefix, tokens=tokens, home=tmp_path
    )
    async with running(make_app(settings)) as service:
        pool = service.runtime.pool
        await produce_events(kafka_bootstrap, topic_prefix + topics.DATA, before)
        await eventually(
            lambda: pool.fetchval("SELECT count(*) >= 25 FROM audit_log"), timeout=60, what="events chained"
        )
        await eventually(lambda: publisher_caught_up(service), what="audit.entry published up to the head")
        first_ids = {p.seq: e.id for _r, e, p in await published_entries(kafka_bootstrap, topic_prefix)}
        head_before = await pool.fetchval("SELECT max(seq) FROM audit_log")
        assert set(first_ids) >= set(range(1, head_before + 1))

        broker_control.restart()  # vigil.audit is gone
        await eventually(lambda: _losses(service.runtime), timeout=60, what="the auditor noticing the loss")
        await eventually(
            lambda: pool.fetchval("SELECT rewound_at IS NOT NULL FROM audit_publish_cursor"),
            timeout=60,
            what="the publisher's cursor rewound (on_broker_loss hook)",
        )

        after = [data_updated() for _ in range(5)]  # the log keeps growing after the loss
        await produce_events(kafka_bootstrap, topic_prefix + topics.DATA, after)
        await eventually(
            lambda: pool.fetchval("SELECT count(*) FROM audit_log WHERE event_id = ANY($1)", [e.id for e in after]),
            timeout=60,
            what="new events chained after the loss",
        )

        async def republished() -> list[tuple[int, str]] | None:
            if not await publisher_caught_up(service):
                return None
            head = await pool.fetchval("SELECT max(seq) FROM audit_log")
            found = [(p.seq, e.id) for _r, e, p in await published_entries(kafka_bootstrap, topic_prefix, timeout=4)]
            return found if {s for s, _ in found} >= set(range(1, head + 1)) else None

        found = await eventually(republished, timeout=60, what="every seq on the new vigil.audit")
        head = await pool.fetchval("SELECT max(seq) FROM audit_log")
        assert {s for s, _ in found} == set(range(1, head + 1))
        for seq, event_id in found:
            assert event_id == entry_event_id("audit", seq)
            if seq in first_ids:
                assert event_id == first_ids[seq]  # a republish is the same event
        seqs = [s for s, _ in found]
        assert seqs == sorted(seqs)  # still in seq order on the new topic


async def _losses(runtime: object) -> int:
    return int(runtime.epoch.losses)  # type: ignore[attr-defined]


def data_updated() -> Envelope:
    n = uuid.uuid4().hex
    payload = DataUpdated(
        dataset="labs",
        content_digest="sha256:" + hashlib.sha256(n.encode()).hexdigest(),
        uri=f"file:///labs/{n}.parquet",
        row_count=1,
        producer="lims",
    )
    return make_event(payload, source="lims://x", actor="system:lims")


async def publisher_caught_up(service: RunningService) -> bool:
    row = await service.runtime.pool.fetchrow(
        "SELECT (SELECT last_seq FROM audit_publish_cursor) AS cursor, "
        "(SELECT coalesce(max(seq), 0) FROM audit_log) AS head"
    )
    return bool(row["head"] > 0 and row["cursor"] >= row["head"])


async def published_entries(bootstrap: str, prefix: str, *, timeout: float = 8.0) -> list[tuple[Any, Any, Any]]:
    """Every ``audit.entry`` on vigil.audit as (record, envelope, payload), in (partition, offset) order."""
    records = await read_all(bootstrap, prefix + topics.AUDIT, expect=10**9, timeout=timeout)
    records.sort(key=lambda r: (r.partition, r.offset))
    decoded = [(r, *decode_event(r.value)) for r in records]
    return [(r, e, p) for r, e, p in decoded if e.type == "audit.entry"]
