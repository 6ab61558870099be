"""Auditor SQL: appending chained entries in batches, queries, and reading the chain back for verification."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg

from vigil.auditor.chain import GENESIS_HASH, EntryFields, StoredEntry, entry_hash, normalise_time
from vigil.bus.context import Delivery

CHAIN_LOCK = 0x5649_4749_4C41_5544  # advisory lock serialising writers of the chain ("VIGILAUD")


async def append_entries(conn: asyncpg.Connection, deliveries: list[Delivery]) -> int:
    """Append one chained entry per delivery (already deduplicated by the inbox) in one statement."""
    if not deliveries:
        return 0
    await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
    head = await conn.fetchrow("SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq, prev = (head["seq"], head["entry_hash"]) if head else (0, GENESIS_HASH)
    columns: dict[str, list[Any]] = {
        k: []
        for k in (
            "seq",
            "event_id",
            "event_type",
            "subject",
            "actor",
            "event_time",
            "correlation_id",
            "causation_id",
            "topic",
            "event_sha256",
            "prev_hash",
            "entry_hash",
            "event",
        )
    }
    for d in deliveries:
        env = d.envelope
        seq += 1
        raw = env.canonical_bytes()
        fields = EntryFields(seq, env.id, env.type, env.subject, env.actor, normalise_time(env.time), env.digest())
        current = entry_hash(prev, fields)
        for key, value in (
            ("seq", seq),
            ("event_id", env.id),
            ("event_type", env.type),
            ("subject", env.subject),
            ("actor", env.actor),
            ("event_time", datetime.fromisoformat(env.time)),
            ("correlation_id", env.correlationid),
            ("causation_id", env.causationid),
            ("topic", d.topic),
            ("event_sha256", fields.event_sha256),
            ("prev_hash", prev),
            ("entry_hash", current),
            ("event", raw),
        ):
            columns[key].append(value)
        prev = current
    await conn.execute(
        """
        INSERT INTO audit_log (seq, event_id, event_type, subject, actor, event_time, correlation_id, causation_id,
                               topic, event_sha256, prev_hash, entry_hash, event)
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[])
        """,
        *columns.values(),
    )
    return len(deliveries)


ENTRY_COLUMNS = (
    "seq, event_id, event_type, subject, actor, event_time, correlation_id, causation_id, topic, event_sha256, "
    "prev_hash, entry_hash, recorded_at"
)


async def query_entries(
    conn: asyncpg.Connection,
    *,
    subject: str | None = None,
    subject_prefix: str | None = None,
    event_type: str | None = None,
    actor: str | None = None,
    correlation_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_seq: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Entries matching every given filter, in chain order."""
    like = None
    if subject_prefix is not None:
        like = subject_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = await conn.fetch(
        f"SELECT {ENTRY_COLUMNS} FROM audit_log WHERE seq > $1 "
        "AND ($2::text IS NULL OR subject = $2) AND ($3::text IS NULL OR subject LIKE $3) "
        "AND ($4::text IS NULL OR event_type = $4) AND ($5::text IS NULL OR actor = $5) "
        "AND ($6::text IS NULL OR correlation_id = $6) AND ($7::timestamptz IS NULL OR event_time >= $7) "
        "AND ($8::timestamptz IS NULL OR event_time < $8) ORDER BY seq LIMIT $9",
        after_seq,
        subject,
        like,
        event_type,
        actor,
        correlation_id,
        since,
        until,
        limit,
    )
    return [dict(r) for r in rows]


async def get_entry(conn: asyncpg.Connection, event_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {ENTRY_COLUMNS}, event FROM audit_log WHERE event_id = $1", event_id)


async def iter_chain(conn: asyncpg.Connection, batch: int = 5000) -> AsyncIterator[StoredEntry]:
    """The whole chain in seq order, streamed in batches (must run inside a transaction for the cursor)."""
    async for row in conn.cursor(
        "SELECT seq, event_id, event_type, subject, actor, event_sha256, prev_hash, entry_hash, event, "
        "event_time FROM audit_log ORDER BY seq",
        prefetch=batch,
    ):
        yield StoredEntry(
            EntryFields(
                row["seq"],
                row["event_id"],
                row["event_type"],
                row["subject"],
                row["actor"],
                normalise_time(row["event_time"]),
                row["event_sha256"],
            ),
            row["prev_hash"],
            row["entry_hash"],
            bytes(row["event"]),
        )
