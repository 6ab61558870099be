"""Auditor handlers: every consumed event becomes one chained entry, written in batches."""

from __future__ import annotations

from vigil.auditor import store
from vigil.bus.consumer import BatchHandler
from vigil.bus.context import BatchContext, Delivery
from vigil.service.runtime import ServiceRuntime


async def on_events(ctx: BatchContext, deliveries: list[Delivery]) -> None:
    """Append the batch to the chain (the inbox has removed redeliveries already)."""
    await store.append_entries(ctx.conn, deliveries)


def build_batch_handler(_runtime: ServiceRuntime) -> BatchHandler:
    return on_events
