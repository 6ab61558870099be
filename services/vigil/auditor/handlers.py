"""Auditor handlers: control-plane events become one chained entry each; stream batches become one digest entry
per topic-partition — all in the batch's one transaction.

The auditor's consumer runs with ``dedupe="handler"``: no inbox rows for control-plane events. ``append_entries``
drops event ids the chain already holds (UNIQUE ``event_id``, looked up under the chain lock), which makes a
redelivery — and the consumer's one-record-at-a-time fallback after a failed batch — a no-op. Stream records are
not chained one by one, so their ids still go through the inbox (a redelivered record is not counted twice in a
digest). ``audit.entry`` events are published from ``audit_log`` itself (``publisher.py``); digests, which are few,
go through the outbox as ``audit.stream_digest``.
"""

from __future__ import annotations

import hashlib
from functools import partial
from typing import Any, cast

import asyncpg
import orjson

from vigil.auditor import feed, store
from vigil.auditor.settings import AuditorSettings
from vigil.bus.consumer import BatchHandler, RejectionHandler, claim_inbox
from vigil.bus.context import BatchContext, Delivery, Rejection
from vigil.bus.outbox import OutboxRecord, enqueue_many
from vigil.events import make_event, topics
from vigil.events.catalog.security import EventRejected, RejectionReason
from vigil.service.runtime import ServiceRuntime

STREAM_TOPICS = frozenset(topics.STREAMS)


def retention_policy(settings: AuditorSettings) -> store.RetentionPolicy:
    return store.RetentionPolicy(settings.audit_retention_days, settings.audit_retention_by_type)


async def on_events(
    ctx: BatchContext, deliveries: list[Delivery], *, chain: str, retention: store.RetentionPolicy
) -> None:
    """Chain the batch's new control-plane events and one digest per stream partition; publish the digests."""
    control: list[store.Audited] = []
    streams: list[Delivery] = []
    for d in deliveries:
        if d.topic in STREAM_TOPICS:
            streams.append(d)
        else:
            control.append(store.Audited.of(d.envelope, d.topic, d.signer))
    if streams:
        streams = await claim_inbox(ctx.conn, streams)
    digests = feed.stream_digests(streams, chain)
    await store.append_entries(ctx.conn, control + digests, retention)
    if digests:
        await enqueue_many(ctx.conn, [OutboxRecord.of(d.envelope, validate=False) for d in digests])


async def on_rejected(conn: asyncpg.Connection, rejection: Rejection, *, retention: store.RetentionPolicy) -> None:
    """Chain an ``event.rejected`` entry for a record refused for its signer (in the dead letter's transaction).

    The refused record itself is not chained: its claimed id, type, actor and subject are quoted in the entry's
    data (bounded), under a subject of its own, so it neither takes a real event's id nor enters an entity's history.
    """
    claimed = _claimed(rejection.value)
    payload = EventRejected(
        topic=rejection.topic,
        partition=rejection.partition,
        offset=rejection.offset,
        reason=cast(RejectionReason, rejection.reason),
        detail=_text(rejection.detail, 1000) or "",
        record_sha256=hashlib.sha256(rejection.value or b"").hexdigest(),
        key_id=_text(rejection.kid, 64),
        signer=rejection.principal,
        claimed_id=_text(claimed.get("id"), 256),
        claimed_type=_text(claimed.get("type"), 256),
        claimed_actor=_text(claimed.get("actor"), 256),
        claimed_subject=_text(claimed.get("subject"), 512),
    )
    envelope = make_event(payload, source="vigil://auditor", actor=store.AUDITOR_PRINCIPAL)
    audited = store.Audited.of(envelope, rejection.topic, store.AUDITOR_PRINCIPAL)
    await store.append_entries(conn, [audited], retention)


def _claimed(value: bytes | None) -> dict[str, Any]:
    """The refused record's top-level JSON object, or {} (too large, not JSON, not an object)."""
    if not value or len(value) > 1024 * 1024:
        return {}
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _text(value: object, limit: int) -> str | None:
    """A claimed string as it may go into the chain: a string, NUL-free (Postgres JSON refuses it), bounded."""
    return value.replace("\x00", "")[:limit] if isinstance(value, str) else None


def build_rejection_handler(runtime: ServiceRuntime) -> RejectionHandler:
    return partial(on_rejected, retention=retention_policy(cast(AuditorSettings, runtime.settings)))


def make_on_events(chain: str, retention: store.RetentionPolicy) -> BatchHandler:
    """:func:`on_events` bound to one chain and retention policy."""
    return partial(on_events, chain=chain, retention=retention)


def build_batch_handler(runtime: ServiceRuntime) -> BatchHandler:
    settings = cast(AuditorSettings, runtime.settings)
    return make_on_events(settings.audit_chain, retention_policy(settings))
