"""What a handler gets: the event, a connection inside the transaction that records it, and a way to emit."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from vigil.bus.outbox import enqueue
from vigil.bus.tracing import current_traceparent
from vigil.events import Envelope, EventPayload, make_event


@dataclass
class Emitter:
    """Builds envelopes for a service and writes them to its outbox in the current transaction."""

    conn: asyncpg.Connection
    source: str
    default_actor: str
    emitted: list[Envelope] = field(default_factory=list)

    async def emit(
        self,
        payload: EventPayload,
        *,
        cause: Envelope | None = None,
        actor: str | None = None,
        subject: str | None = None,
        event_id: str | None = None,
    ) -> Envelope:
        """Create the event (linked to ``cause``) and enqueue it; it is published after the transaction commits."""
        envelope = make_event(
            payload,
            source=self.source,
            actor=actor or self.default_actor,
            cause=cause,
            subject=subject,
            event_id=event_id,
            traceparent=current_traceparent(),
        )
        await enqueue(self.conn, envelope)
        self.emitted.append(envelope)
        return envelope


@dataclass
class Delivery:
    """One consumed, contract-checked event and where it came from."""

    envelope: Envelope
    payload: EventPayload
    topic: str
    partition: int
    offset: int


@dataclass
class HandlerContext:
    """Per-event context. ``conn`` is inside the transaction that also writes the inbox row."""

    conn: asyncpg.Connection
    delivery: Delivery
    emitter: Emitter

    @property
    def event(self) -> Envelope:
        return self.delivery.envelope

    async def emit(self, payload: EventPayload, *, actor: str | None = None, subject: str | None = None) -> Envelope:
        """Emit an event caused by the one being handled."""
        return await self.emitter.emit(payload, cause=self.delivery.envelope, actor=actor, subject=subject)


@dataclass
class BatchContext:
    """Context of a batch handler: one transaction for many deliveries (high-volume consumers)."""

    conn: asyncpg.Connection
    emitter: Emitter
