"""Dead letters: records a consumer gave up on, kept in Postgres (inspectable, replayable) and sent to vigil.dlq.

A dead letter is written once per (consumer group, record identity): the event id when the record parsed, else the
sha256 of its bytes. So a poison record redelivered after a crash is not dead-lettered twice, and the DLQ holds
exactly the poison records. The record for ``vigil.dlq`` goes through the outbox, so it survives a broker loss too.

A record that broke its contract but whose envelope is a JSON object still names the event it claims to be: its
``id`` and ``type`` (when they are short strings) are recorded, so ``vigil dlq list`` can say which event was refused.
Its dedupe identity stays the digest of its bytes: an id that did not pass the contract is not trusted to tell two
different poison records apart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from aiokafka import ConsumerRecord

from vigil.bus.outbox import decode_headers, encode_headers, enqueue_raw
from vigil.events import new_id
from vigil.events import topics as logical_topics
from vigil.events.signing import SIGNING_HEADERS


@dataclass(frozen=True)
class DeadLetter:
    """A record this consumer gave up on, and why."""

    dedupe_key: str
    group: str
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str
    error: str
    attempts: int
    event_id: str | None = None
    event_type: str | None = None

    @classmethod
    def from_record(
        cls,
        record: ConsumerRecord,
        *,
        topic: str,
        group: str,
        reason: str,
        error: str,
        attempts: int,
        event_id: str | None,
        event_type: str | None,
    ) -> DeadLetter:
        identity = event_id or "sha256:" + hashlib.sha256(record.value or b"").hexdigest()
        if event_id is None:  # the contract check failed: name the event anyway when the envelope says which
            event_id, claimed_type = claimed_identity(record.value)
            event_type = event_type or claimed_type
        key = record.key.decode(errors="replace") if record.key is not None else None
        return cls(
            dedupe_key=f"{group}|{topic}|{identity}",
            group=group,
            topic=topic,
            partition=record.partition,
            offset=record.offset,
            key=key,
            value=record.value,
            headers=list(record.headers or []),
            reason=reason,
            error=error[:4000],
            attempts=attempts,
            event_id=event_id,
            event_type=event_type,
        )

    def dlq_headers(self) -> list[tuple[str, bytes]]:
        """Headers of the vigil.dlq record: the original ones plus the reason and provenance.

        The original's signing headers are kept under ``dlq-orig-…``: the vigil.dlq record is signed by the service
        that dead-lettered it (its statement that the record is dead); a replay sends the stored originals.
        """
        extra = {
            "dlq_reason": self.reason,
            "dlq_error": self.error[:1000],
            "dlq_attempts": str(self.attempts),
            "dlq_group": self.group,
            "dlq_topic": self.topic,
            "dlq_partition": str(self.partition),
            "dlq_offset": str(self.offset),
        }
        original = [(f"dlq-orig-{k}" if k in SIGNING_HEADERS else k, v) for k, v in self.headers]
        return [*original, *((k, v.encode()) for k, v in extra.items())]


#: Larger records are not parsed again for their id (the contract check already refused them as too large).
_MAX_PARSE_BYTES = 1024 * 1024
_MAX_ID_CHARS = 200


def claimed_identity(raw: bytes | None) -> tuple[str | None, str | None]:
    """``(id, type)`` of an envelope that did not pass its contract, each None unless a non-empty short string."""
    if not raw or len(raw) > _MAX_PARSE_BYTES:
        return None, None
    try:
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(envelope, dict):
        return None, None

    def text(name: str) -> str | None:
        value = envelope.get(name)
        ok = isinstance(value, str) and 0 < len(value) <= _MAX_ID_CHARS and "\x00" not in value
        return value if ok else None

    return text("id"), text("type")


async def record_dead_letter(conn: asyncpg.Connection, letter: DeadLetter) -> bool:
    """Store the dead letter and enqueue it for vigil.dlq. False if it was already dead (a redelivery)."""
    row = await conn.fetchrow(
        """
        INSERT INTO dead_letters (dedupe_key, event_id, event_type, topic, partition, "offset", key, value, headers,
                                  reason, error, attempts)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12)
        ON CONFLICT (dedupe_key) DO UPDATE
            SET status = 'dead', reason = EXCLUDED.reason, error = EXCLUDED.error,
                attempts = dead_letters.attempts + EXCLUDED.attempts, updated_at = now()
            WHERE dead_letters.status = 'replayed'
        RETURNING id
        """,
        letter.dedupe_key,
        letter.event_id,
        letter.event_type,
        letter.topic,
        letter.partition,
        letter.offset,
        letter.key,
        letter.value,
        encode_headers(letter.headers),
        letter.reason,
        letter.error,
        letter.attempts,
    )
    if row is None:
        return False
    await enqueue_raw(conn, new_id(), logical_topics.DLQ, letter.key, letter.value or b"", letter.dlq_headers())
    return True


async def list_dead_letters(
    conn: asyncpg.Connection, *, status: str | None = None, limit: int = 100, after_id: int = 0
) -> list[dict[str, Any]]:
    """Dead letters for inspection (newest last), keyset-paginated by id."""
    rows = await conn.fetch(
        'SELECT id, event_id, event_type, topic, partition, "offset", key, reason, error, attempts, status, '
        "created_at, updated_at, octet_length(value) AS size FROM dead_letters "
        "WHERE id > $1 AND ($2::text IS NULL OR status = $2) ORDER BY id LIMIT $3",
        after_id,
        status,
        limit,
    )
    return [dict(r) for r in rows]


async def replay_dead_letter(conn: asyncpg.Connection, letter_id: int) -> dict[str, Any] | None:
    """Send a dead letter's original record back to its topic (through the outbox); the letter as it was (where
    its record came from, why it died), or None if unknown/not dead."""
    row = await conn.fetchrow(
        "UPDATE dead_letters SET status = 'replayed', updated_at = now() WHERE id = $1 AND status = 'dead' "
        'RETURNING topic, partition, "offset", key, value, headers, event_id, event_type, reason, attempts',
        letter_id,
    )
    if row is None:
        return None
    headers = decode_headers(row["headers"])
    await enqueue_raw(conn, new_id(), row["topic"], row["key"], bytes(row["value"] or b""), headers)
    return dict(row)
