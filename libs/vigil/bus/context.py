"""What a handler gets: the event, a connection inside the transaction that records it, and a way to emit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from vigil.bus.outbox import enqueue
from vigil.bus.tracing import current_traceparent
from vigil.events import Envelope, EventPayload, make_event

log = logging.getLogger("vigil.bus")


@dataclass
class Emitter:
    """Builds envelopes for a service and writes them to its outbox in the current transaction."""

    conn: asyncpg.Connection
    source: str
    default_actor: str
    emitted: list[Envelope] = field(default_factory=list)
    _after_commit: list[Callable[[], None]] = field(default_factory=list)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the transaction has committed (never on rollback) — e.g. wake a worker that will
        read what this transaction wrote: woken earlier, it would find nothing and sleep a whole poll interval."""
        self._after_commit.append(callback)

    def committed(self) -> None:
        """Called by the consumer after the commit; a failing callback is logged, the event stays applied."""
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("after-commit callback failed")

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


class Delivery:
    """One consumed, contract-checked event and where it came from.

    ``payload`` is the typed payload. The consumer may leave it unbuilt until a handler first reads it — only for
    payload classes whose model checks nothing beyond the JSON Schema the event already passed
    (:func:`vigil.events.contracts.model_adds_nothing`), so reading it later cannot fail for the event's content.
    Batch handlers that work from ``envelope.data`` (the auditor) then never pay for the model (issue #9).
    """

    __slots__ = ("_payload", "_payload_cls", "envelope", "offset", "partition", "signer", "topic")

    def __init__(self, envelope: Envelope, payload: EventPayload, topic: str, partition: int, offset: int) -> None:
        self.envelope = envelope
        self._payload: EventPayload | None = payload
        self._payload_cls: type[EventPayload] | None = None
        self.topic = topic
        self.partition = partition
        self.offset = offset
        #: The verified producer (``service:<name>`` / ``producer:<name>``), None when the consumer checks none.
        self.signer: str | None = None

    @classmethod
    def deferred(
        cls, envelope: Envelope, payload_cls: type[EventPayload], topic: str, partition: int, offset: int
    ) -> Delivery:
        """A delivery whose payload is built from ``envelope.data`` (already checked) when first read."""
        delivery = cls.__new__(cls)
        delivery.envelope = envelope
        delivery._payload = None
        delivery._payload_cls = payload_cls
        delivery.topic = topic
        delivery.partition = partition
        delivery.offset = offset
        delivery.signer = None
        return delivery

    @property
    def payload(self) -> EventPayload:
        if self._payload is None and self._payload_cls is not None:
            self._payload = self._payload_cls.model_validate(self.envelope.data)
        return self._payload  # type: ignore[return-value]  # None only where a test built one without a payload

    def __repr__(self) -> str:
        return f"Delivery({self.envelope.type} {self.envelope.id} @ {self.topic}[{self.partition}]:{self.offset})"


@dataclass(frozen=True)
class Rejection:
    """A record the consumer refused because of its signer: unsigned, signed by an unknown key, a signature that
    does not verify, or a signer not allowed to produce its type (``reason``). ``value`` is the record as received."""

    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    value: bytes | None
    kid: str | None
    principal: str | None  # the verified signer, when the refusal is about what it may produce


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

    def after_commit(self, callback: Callable[[], None]) -> None:
        """See :meth:`Emitter.after_commit`."""
        self.emitter.after_commit(callback)


@dataclass
class BatchContext:
    """Context of a batch handler: one transaction for many deliveries (high-volume consumers)."""

    conn: asyncpg.Connection
    emitter: Emitter
