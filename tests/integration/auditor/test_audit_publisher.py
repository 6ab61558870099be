"""The audit log is its own outbox, and the chain is its own inbox (real broker and Postgres).

- ``audit.entry`` events reach vigil.audit from ``audit_log`` itself: exactly once per seq, in seq order, with ids
  derived from (chain, seq); the outbox holds no ``audit.entry`` row.
- The auditor's consumer runs with ``dedupe="handler"``: a redelivered control-plane event is chained once, also
  when its batch fails on a poison record and the consumer falls back to one record at a time.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from audit_support import auditor, event, published_entries, publisher_caught_up, topic_of

from support.kafka import produce_events
from support.services import Tokens, eventually, make_tokens
from vigil.auditor.feed import entry_event_id
from vigil.events import Envelope, parse_json

pytestmark = pytest.mark.integration


async def _chained(service: Any, ids: list[str]) -> Counter[str]:
    rows = await service.runtime.pool.fetch("SELECT event_id FROM audit_log WHERE event_id = ANY($1)", ids)
    return Counter(r["event_id"] for r in rows)


async def test_audit_entries_published_once_in_seq_order_with_derived_ids(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    events: list[Envelope] = [event("data.updated") for _ in range(40)] + [event("model.version.registered")]
    async with auditor(
        dsn=fresh_db, bootstrap=kafka_bootstrap, prefix=topic_prefix, tokens=tokens, home=tmp_path
    ) as service:
        for e in events:
            await produce_events(kafka_bootstrap, topic_prefix + topic_of(e), [e])

        async def all_chained() -> bool:
            return len(await _chained(service, [e.id for e in events])) == len(events)

        await eventually(all_chained, what="every event chained")
        await eventually(lambda: publisher_caught_up(service), what="audit.entry published up to the head")
        rows = await service.runtime.pool.fetch("SELECT seq, event_id, entry_hash FROM audit_log ORDER BY seq")
        published = await published_entries(kafka_bootstrap, topic_prefix)

        seqs = [p.seq for _r, _e, p in published]
        assert Counter(seqs) == Counter(r["seq"] for r in rows)  # every seq, exactly once
        assert {r.partition for r, _e, _p in published} == {published[0][0].partition}  # keyed by chain
        assert seqs == sorted(seqs)  # in seq order
        by_seq = {r["seq"]: r for r in rows}
        for record, envelope, payload in published:
            assert envelope.id == entry_event_id("audit", payload.seq)  # deterministic, documented derivation
            assert dict(record.headers)["ce_id"] == envelope.id.encode()
            assert payload.event_id == by_seq[payload.seq]["event_id"] == envelope.causationid
            assert payload.entry_hash == by_seq[payload.seq]["entry_hash"]
        # Nothing went through the outbox for them (checkpoints, digests and access records still do).
        outbox = await service.runtime.pool.fetch("SELECT value FROM outbox")
        assert "audit.entry" not in {parse_json(bytes(r["value"]))["type"] for r in outbox}
        # No inbox rows for control-plane events: the chain deduplicates them itself.
        assert await service.runtime.pool.fetchval("SELECT count(*) FROM inbox WHERE topic = 'vigil.data'") == 0
        assert service.runtime.consumer.config.dedupe == "handler"


async def test_redelivered_event_is_chained_once_also_through_the_poison_fallback(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    first, second = event("data.updated"), event("data.updated")
    # Passes every contract check but Postgres refuses it (NUL in a text column): the whole batch fails and the
    # consumer retries record by record — where the redelivered event must still be recognised.
    poison = Envelope(**{**event("data.updated").model_dump(), "subject": "dataset/x\x00y"})
    after = event("data.updated")
    topic = topic_prefix + topic_of(first)
    async with auditor(
        dsn=fresh_db,
        bootstrap=kafka_bootstrap,
        prefix=topic_prefix,
        tokens=tokens,
        home=tmp_path,
        consumer_max_attempts=1,
    ) as service:
        await produce_events(kafka_bootstrap, topic, [first, second])

        async def chained(ids: list[str], n: int) -> Counter[str] | None:
            found = await _chained(service, ids)
            return found if len(found) == n else None

        await eventually(lambda: chained([first.id, second.id], 2), what="the first two chained")
        # Redelivery of both (same partition: same key), around a poison record and a new event.
        await produce_events(kafka_bootstrap, topic, [first, poison, second, after, first])

        found = await eventually(lambda: chained([first.id, second.id, after.id], 3), what="the new event chained")
        letters = await eventually(
            lambda: service.runtime.pool.fetch("SELECT event_id, reason FROM dead_letters"), what="poison dead-lettered"
        )
        assert [(r["event_id"], r["reason"]) for r in letters] == [(poison.id, "handler_failed")]
        assert found == Counter({first.id: 1, second.id: 1, after.id: 1})
        assert await service.runtime.pool.fetchval("SELECT count(*) FROM audit_log") == 3
        report = (await service.client.get("/v1/verify", headers=tokens.headers("auditor"))).json()
        assert report["ok"] is True, report
