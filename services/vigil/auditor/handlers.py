"""Auditor handlers: control-plane events become one chained entry each; stream batches become one digest entry
per topic-partition. Every entry is republished as ``audit.entry`` (and every digest as ``audit.stream_digest``) on
vigil.audit through the outbox — all in the batch's one transaction, with one multi-row insert per table."""

from __future__ import annotations

from typing import cast

from vigil.auditor import feed, store
from vigil.auditor.settings import AuditorSettings
from vigil.bus.consumer import BatchHandler
from vigil.bus.context import BatchContext, Delivery
from vigil.bus.outbox import OutboxRecord, enqueue_many
from vigil.events import topics
from vigil.service.runtime import ServiceRuntime

STREAM_TOPICS = frozenset(topics.STREAMS)


def retention_policy(settings: AuditorSettings) -> store.RetentionPolicy:
    return store.RetentionPolicy(settings.audit_retention_days, settings.audit_retention_by_type)


def make_on_events(chain: str, retention: store.RetentionPolicy) -> BatchHandler:
    async def on_events(ctx: BatchContext, deliveries: list[Delivery]) -> None:
        """Chain the batch (the inbox has removed redeliveries already) and publish what was chained."""
        control = [store.Audited.of(d.envelope, d.topic) for d in deliveries if d.topic not in STREAM_TOPICS]
        digests = feed.stream_digests([d for d in deliveries if d.topic in STREAM_TOPICS], chain)
        appended = await store.append_entries(ctx.conn, control + digests, retention)
        records: list[OutboxRecord] = [OutboxRecord.of(d.envelope, validate=False) for d in digests]
        records.extend(feed.entry_records(appended, chain))
        await enqueue_many(ctx.conn, records)

    return on_events


def build_batch_handler(runtime: ServiceRuntime) -> BatchHandler:
    settings = cast(AuditorSettings, runtime.settings)
    return make_on_events(settings.audit_chain, retention_policy(settings))
