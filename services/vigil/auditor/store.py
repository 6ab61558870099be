"""Auditor SQL: appending chained entries in batches, queries, and reading the chain back for verification.

Writers of the chain serialise on one advisory lock (per transaction), drop event ids the chain already holds and
append the rest of a batch with one binary COPY; readers never lock. ``audit_log`` is also the outbox of the
``audit.entry`` events (see ``publisher.py``). Checkpoint and Merkle-block SQL lives in ``checkpoints.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from vigil.auditor.chain import GENESIS_HASH, EntryFields, StoredEntry, entry_hash_of, normalise_time
from vigil.auditor.settings import SIX_MONTHS_DAYS, SIX_YEARS_DAYS
from vigil.events import Envelope

#: The signer of entries the auditor writes itself (access records, stream digests, refusals).
AUDITOR_PRINCIPAL = "service:auditor"
CHAIN_LOCK = 0x5649_4749_4C41_5544  # advisory lock serialising writers of the chain ("VIGILAUD")


_FAST_JSON = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_FAST_JSON |= orjson.OPT_PASSTHROUGH_SUBCLASS


def canonical_event_bytes(envelope: Envelope) -> bytes:
    """``envelope.canonical_bytes()`` without pydantic's ``model_dump``: the field dict straight to orjson.

    Equal by construction when every value is a JSON-native type (what a decoded event always holds): orjson then
    writes what ``model_dump(mode="json")`` would have handed it. Anything pydantic would convert first (datetimes,
    dataclasses, subclasses of builtins, numpy, bytes, sets, …) makes orjson raise here — no ``default`` is given —
    and the slow, exact path is taken. A unit test keeps the two equal over every schema example.
    """
    try:
        return orjson.dumps(envelope.__dict__, option=_FAST_JSON)
    except TypeError:
        return envelope.canonical_bytes()


@dataclass(frozen=True, slots=True)
class Audited:
    """One event to chain: the envelope, its canonical bytes (what is hashed and kept) and where it came from."""

    envelope: Envelope
    raw: bytes
    topic: str
    signer: str | None = None  # the verified producer, recorded (and hashed) beside the claimed actor

    @classmethod
    def of(cls, envelope: Envelope, topic: str, signer: str | None = None) -> Audited:
        return cls(envelope, canonical_event_bytes(envelope), topic, signer)


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
    "signer",
)


# The head of the chain and which of the batch's event ids it holds already, in one round trip (after the lock).
_HEAD_AND_KNOWN = (
    "SELECT h.seq, h.entry_hash, ARRAY(SELECT event_id FROM audit_log WHERE event_id = ANY($1::text[])) AS known "
    "FROM (SELECT 1) AS one "
    "LEFT JOIN LATERAL (SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1) AS h ON true"
)


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel that tells the ``audit.entry`` publisher entries were committed."""
    return f"vigil_audit_{schema}"


async def append_entries(
    conn: asyncpg.Connection, items: Sequence[Audited], retention: RetentionPolicy = DEFAULT_RETENTION
) -> int:
    """Append one chained entry per item whose event id the chain does not hold yet; returns how many.

    Deduplication is the chain's own: ``event_id`` is UNIQUE, and the ids already present are looked up under the
    chain lock, so a redelivered event (a consumer with ``dedupe="handler"``, a poison-isolation retry, a republish
    after a broker loss) is never chained twice; an id repeated inside ``items`` is chained once. The batch lands in
    one binary COPY; the commit wakes the ``audit.entry`` publisher (NOTIFY is delivered at commit, never before).
    """
    if not items:
        return 0
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1), pg_notify('vigil_audit_' || current_schema(), '')", CHAIN_LOCK
    )
    head = await conn.fetchrow(_HEAD_AND_KNOWN, [item.envelope.id for item in items])
    seq, prev = (head["seq"], head["entry_hash"]) if head["seq"] is not None else (0, GENESIS_HASH)
    seen: set[str] = set(head["known"])
    now = datetime.now(UTC)
    records: list[tuple[Any, ...]] = []
    class_by_type: dict[str, tuple[str, datetime]] = {}
    sha256 = hashlib.sha256
    for item in items:
        env = item.envelope
        event_id = env.id
        if event_id in seen:
            continue
        seen.add(event_id)
        seq += 1
        event_time = normalise_time(env.time)
        event_sha256 = sha256(item.raw).hexdigest()
        current = entry_hash_of(
            prev, seq, event_id, env.type, env.subject, env.actor, event_time, event_sha256, item.signer
        )
        retention_class = class_by_type.get(env.type)
        if retention_class is None:
            cls = retention.class_of(env.type)
            retention_class = class_by_type[env.type] = (cls, retention.expires_at(cls, now))
        records.append(
            (
                seq,
                event_id,
                env.type,
                env.subject,
                env.actor,
                datetime.fromisoformat(event_time),
                env.correlationid,
                env.causationid,
                item.topic,
                event_sha256,
                prev,
                current,
                item.raw,
                retention_class[0],
                retention_class[1],
                item.signer,
                now,
            )
        )
        prev = current
    if records:
        # Binary COPY: the cheapest way to land a batch (no per-element array encoding, no statement per row).
        # The append-only triggers fire for UPDATE/DELETE/TRUNCATE only, so COPY … FROM is an ordinary insert.
        await conn.copy_records_to_table("audit_log", records=records, columns=[*_COLUMNS, "recorded_at"])
    return len(records)


ENTRY_COLUMNS = (
    "seq, event_id, event_type, subject, actor, event_time, correlation_id, causation_id, topic, event_sha256, "
    "prev_hash, entry_hash, recorded_at, retention_class, expires_at, signer"
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


async def latest_for_subject(conn: asyncpg.Connection, subject: str, types: Sequence[str] | None = None) -> str | None:
    """The event id of the newest entry about ``subject`` (the entity's current state), of one of ``types`` when
    given. With ``types``, newest by event time (then chain order): the auditor reads its topics' partitions
    independently, so a decision can be chained after the request that it answered, which happened before it."""
    if types is None:
        value: str | None = await conn.fetchval(
            "SELECT event_id FROM audit_log WHERE subject = $1 ORDER BY seq DESC LIMIT 1", subject
        )
    else:
        value = await conn.fetchval(
            "SELECT event_id FROM audit_log WHERE subject = $1 AND event_type = ANY($2::text[]) "
            "ORDER BY event_time DESC, seq DESC LIMIT 1",
            subject,
            list(types),
        )
    return value


async def latest_with_field(
    conn: asyncpg.Connection, subject: str, event_type: str, field: str | None = None, value: str | None = None
) -> str | None:
    """The event id of the newest ``event_type`` entry about ``subject`` whose event's ``data[field]`` is ``value``
    (any, when ``field`` is None) — how the why walk finds the rollout or the model version a decision names."""
    if field is None:
        return await latest_for_subject(conn, subject, (event_type,))
    found: str | None = await conn.fetchval(
        "SELECT event_id FROM audit_log WHERE subject = $1 AND event_type = $2 "
        "AND convert_from(event, 'UTF8')::jsonb -> 'data' ->> $3 = $4 ORDER BY event_time DESC, seq DESC LIMIT 1",
        subject,
        event_type,
        field,
        value,
    )
    return found


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
        "event_time, signer FROM audit_log WHERE seq >= $1 ORDER BY seq",
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
                row["signer"],
            ),
            row["prev_hash"],
            row["entry_hash"],
            bytes(row["event"]),
        )
