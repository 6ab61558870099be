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

from functools import partial
from typing import cast

from vigil.auditor import feed, store
from vigil.auditor.settings import AuditorSettings
from vigil.bus.consumer import BatchHandler, claim_inbox
from vigil.bus.context import BatchContext, Delivery
from vigil.bus.outbox import OutboxRecord, enqueue_many
from vigil.events import topics
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
            control.append(store.Audited.of(d.envelope, d.topic))
    if streams:
        streams = await claim_inbox(ctx.conn, streams)
    digests = feed.stream_digests(streams, chain)
    await store.append_entries(ctx.conn, control + digests, retention)
    if digests:
        await enqueue_many(ctx.conn, [OutboxRecord.of(d.envelope, validate=False) for d in digests])


def make_on_events(chain: str, retention: store.RetentionPolicy) -> BatchHandler:
    """:func:`on_events` bound to one chain and retention policy."""
    return partial(on_events, chain=chain, retention=retention)


def build_batch_handler(runtime: ServiceRuntime) -> BatchHandler:
    settings = cast(AuditorSettings, runtime.settings)
    return make_on_events(settings.audit_chain, retention_policy(settings))
