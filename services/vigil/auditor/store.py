"""Auditor SQL: appending chained entries in batches, queries, and reading the chain back for verification.

Writers of the chain serialise on one advisory lock (per transaction) and append a whole batch with one
``INSERT … SELECT unnest(…)``; readers never lock. Checkpoint and Merkle-block SQL lives in ``checkpoints.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from vigil.auditor.chain import GENESIS_HASH, EntryFields, StoredEntry, entry_hash, normalise_time
from vigil.auditor.settings import SIX_MONTHS_DAYS, SIX_YEARS_DAYS
from vigil.events import Envelope, sha256_hex

CHAIN_LOCK = 0x5649_4749_4C41_5544  # advisory lock serialising writers of the chain ("VIGILAUD")


@dataclass(frozen=True)
class Audited:
    """One event to chain: the envelope, its canonical bytes (what is hashed and kept) and where it came from."""

    envelope: Envelope
    raw: bytes
    topic: str

    @classmethod
    def of(cls, envelope: Envelope, topic: str) -> Audited:
        return cls(envelope, envelope.canonical_bytes(), topic)


@dataclass(frozen=True)
class Appended:
    """An entry as written: what the ``audit.entry`` event republishes."""

    item: Audited
    fields: EntryFields
    prev_hash: str
    entry_hash: str


class RetentionPolicy:
    """Event type → retention class → days kept. A pattern ending in ``*`` matches a type prefix."""

    def __init__(self, days: dict[str, int], by_type: dict[str, str], default_class: str = "control_plane") -> None:
        unknown = {c for c in [*by_type.values(), default_class] if c not in days}
        if unknown:
            raise ValueError(f"retention classes without a period: {sorted(unknown)}")
        self.days = dict(days)
        self.exact = {k: v for k, v in by_type.items() if not k.endswith("*")}
        # Longest prefix first, so "deployment.rollout.*" wins over "deployment.*".
        self.prefixes = sorted(((k[:-1], v) for k, v in by_type.items() if k.endswith("*")), key=lambda kv: -len(kv[0]))
        self.default_class = default_class

    def class_of(self, event_type: str) -> str:
        found = self.exact.get(event_type)
        if found is not None:
            return found
        for prefix, cls in self.prefixes:
            if event_type.startswith(prefix):
                return cls
        return self.default_class

    def expires_at(self, cls: str, recorded_at: datetime) -> datetime:
        return recorded_at + timedelta(days=self.days[cls])


DEFAULT_RETENTION = RetentionPolicy(
    {"control_plane": SIX_YEARS_DAYS, "access": SIX_YEARS_DAYS, "stream_digest": SIX_MONTHS_DAYS},
    {"audit.stream_digest": "stream_digest", "access.recorded": "access"},
)

_COLUMNS = (
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
    "retention_class",
    "expires_at",
)


async def append_entries(
    conn: asyncpg.Connection, items: Sequence[Audited], retention: RetentionPolicy = DEFAULT_RETENTION
) -> list[Appended]:
    """Append one chained entry per item (already deduplicated by the inbox) in one statement, in order."""
    if not items:
        return []
    await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
    head = await conn.fetchrow("SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq, prev = (head["seq"], head["entry_hash"]) if head else (0, GENESIS_HASH)
    now = datetime.now(UTC)
    records: list[tuple[Any, ...]] = []
    appended: list[Appended] = []
    expiry_by_class: dict[str, datetime] = {}
    for item in items:
        env = item.envelope
        seq += 1
        fields = EntryFields(
            seq, env.id, env.type, env.subject, env.actor, normalise_time(env.time), sha256_hex(item.raw)
        )
        current = entry_hash(prev, fields)
        retention_class = retention.class_of(env.type)
        expires = expiry_by_class.get(retention_class)
        if expires is None:
            expires = expiry_by_class[retention_class] = retention.expires_at(retention_class, now)
        records.append(
            (
                seq,
                env.id,
                env.type,
                env.subject,
                env.actor,
                datetime.fromisoformat(fields.event_time),
                env.correlationid,
                env.causationid,
                item.topic,
                fields.event_sha256,
                prev,
                current,
                item.raw,
                retention_class,
                expires,
                now,
            )
        )
        appended.append(Appended(item, fields, prev, current))
        prev = current
    # Binary COPY: the cheapest way to land a batch (no per-element array encoding, no statement per row).
    # The append-only triggers fire for UPDATE/DELETE/TRUNCATE only, so COPY … FROM is an ordinary insert.
    await conn.copy_records_to_table("audit_log", records=records, columns=[*_COLUMNS, "recorded_at"])
    return appended


ENTRY_COLUMNS = (
    "seq, event_id, event_type, subject, actor, event_time, correlation_id, causation_id, topic, event_sha256, "
    "prev_hash, entry_hash, recorded_at, retention_class, expires_at"
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


async def latest_for_subject(conn: asyncpg.Connection, subject: str) -> str | None:
    """The event id of the newest entry about ``subject`` (the entity's current state)."""
    value: str | None = await conn.fetchval(
        "SELECT event_id FROM audit_log WHERE subject = $1 ORDER BY seq DESC LIMIT 1", subject
    )
    return value


async def why_walk(conn: asyncpg.Connection, event_id: str, max_depth: int) -> list[asyncpg.Record]:
    """The entry of ``event_id`` and its causes, nearest first, in one round trip (recursive CTE on event_id)."""
    return await conn.fetch(
        f"""
        WITH RECURSIVE walk AS (
            SELECT 0 AS depth, {ENTRY_COLUMNS}, event FROM audit_log WHERE event_id = $1
            UNION ALL
            SELECT w.depth + 1, {", ".join("a." + c.strip() for c in ENTRY_COLUMNS.split(","))}, a.event
            FROM walk w JOIN audit_log a ON a.event_id = w.causation_id
            WHERE w.depth + 1 < $2
        )
        SELECT * FROM walk ORDER BY depth
        """,
        event_id,
        max_depth,
    )


DEPLOYMENT_RESETS = (
    "deployment.created",
    "deployment.rollout.started",
    "deployment.promoted",
    "deployment.rolled_back",
    "deployment.aborted",
)


async def deployment_history_at(conn: asyncpg.Connection, subject: str, at: datetime) -> list[asyncpg.Record]:
    """``deployment.*`` entries of ``subject`` up to ``at``, from the last one that fixed the serving state."""
    anchor = await conn.fetchval(
        "SELECT seq FROM audit_log WHERE subject = $1 AND event_type = ANY($2::text[]) AND event_time <= $3 "
        "ORDER BY seq DESC LIMIT 1",
        subject,
        list(DEPLOYMENT_RESETS),
        at,
    )
    if anchor is None:
        return []
    return await conn.fetch(
        f"SELECT {ENTRY_COLUMNS}, event FROM audit_log WHERE subject = $1 AND seq >= $2 AND event_time <= $3 "
        "AND event_type LIKE 'deployment.%' ORDER BY seq",
        subject,
        anchor,
        at,
    )


async def entries_range(conn: asyncpg.Connection, from_seq: int, to_seq: int) -> list[asyncpg.Record]:
    """Entries ``from_seq..to_seq`` with their event bytes, in order."""
    return await conn.fetch(
        f"SELECT {ENTRY_COLUMNS}, event FROM audit_log WHERE seq BETWEEN $1 AND $2 ORDER BY seq", from_seq, to_seq
    )


async def head(conn: asyncpg.Connection) -> tuple[int, str]:
    """(seq, entry_hash) of the newest entry, (0, genesis) for an empty chain."""
    row = await conn.fetchrow("SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    return (row["seq"], row["entry_hash"]) if row else (0, GENESIS_HASH)


async def first_seq(conn: asyncpg.Connection) -> int | None:
    value: int | None = await conn.fetchval("SELECT min(seq) FROM audit_log")
    return value


async def iter_chain(conn: asyncpg.Connection, batch: int = 5000, from_seq: int = 1) -> AsyncIterator[StoredEntry]:
    """The chain from ``from_seq`` in seq order, streamed in batches (run inside a transaction for the cursor)."""
    async for row in conn.cursor(
        "SELECT seq, event_id, event_type, subject, actor, event_sha256, prev_hash, entry_hash, event, "
        "event_time FROM audit_log WHERE seq >= $1 ORDER BY seq",
        from_seq,
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
