"""W3C trace context across Kafka: injected into record headers on produce, extracted on consume."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context

Headers = list[tuple[str, bytes]]

tracer = trace.get_tracer("vigil.bus")


class _Injected:
    """The propagation fields of one context, in the forms the bus needs them."""

    __slots__ = ("headers", "items", "traceparent")

    def __init__(self, items: tuple[tuple[str, str], ...]) -> None:
        self.items = items
        self.headers = tuple((k, v.encode()) for k, v in items)  # as Kafka headers
        self.traceparent = next((v for k, v in items if k == "traceparent"), None)


def _current_injected() -> _Injected:
    """The propagation fields of the current context, injected once per context object.

    Contexts are immutable (every change makes a new one), so the fields depend only on the context object and the
    propagator: a producer that sends many events from one span injects (and encodes) once, not per event (issue
    #9, issue #20's bus overhead). One entry, replaced whenever either changes; held strongly, so an identity match
    is never a recycled id.
    """
    global _last_injected
    propagator = propagate.get_global_textmap()
    ctx = otel_context.get_current()
    last_propagator, last_ctx, injected = _last_injected
    if propagator is last_propagator and ctx is last_ctx:
        return injected
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context=ctx)
    injected = _Injected(tuple(carrier.items()))
    _last_injected = (propagator, ctx, injected)
    return injected


_last_injected: tuple[object, object, _Injected] = (None, None, _Injected(()))


def inject_headers(headers: Headers | None = None) -> Headers:
    """Current trace context as Kafka headers (adds ``traceparent`` and friends)."""
    out = list(headers or [])
    out.extend(_current_injected().headers)
    return out


def extract_context(headers: Sequence[tuple[str, bytes]] | None) -> Context:
    """Trace context from Kafka headers (an empty context when there is none).

    Extracted onto an empty base context (not whatever context is current where the consumer loop runs), so the
    result depends on the propagation headers alone and is shared by every record that carries the same ones —
    the records of one producer span usually do. Extraction per record was a few percent of the bus consumer's
    CPU (issue #9); contexts are immutable, so sharing one is safe.
    """
    propagator = propagate.get_global_textmap()
    fields = _fields_of(propagator)
    key = (propagator, tuple([(k, v) for k, v in headers if k in fields]) if headers else ())
    cached = _extracted.get(key)
    if cached is None:
        if len(_extracted) >= _EXTRACTED_MAX:
            _extracted.clear()
        carrier = {k: v.decode(errors="replace") for k, v in key[1]}
        cached = _extracted[key] = propagator.extract(carrier, context=Context())
    return cached


#: Extracted contexts by (propagator, its headers from the record); cleared when full. A batch rarely spans more
#: than a few traces; the bound keeps hostile headers (baggage may be 8 KiB) to a few MiB.
_extracted: dict[tuple[object, tuple[tuple[str, bytes], ...]], Context] = {}
_EXTRACTED_MAX = 512


def _fields_of(propagator: object) -> frozenset[str]:
    """The header names ``propagator`` reads, remembered for the last propagator asked about: a composite
    propagator builds the set anew on every read of ``fields``."""
    global _last_fields
    last_propagator, fields = _last_fields
    if propagator is not last_propagator:
        fields = frozenset(propagator.fields)  # type: ignore[attr-defined]  # every TextMapPropagator has it
        _last_fields = (propagator, fields)
    return fields


_last_fields: tuple[object, frozenset[str]] = (None, frozenset())


def current_traceparent() -> str | None:
    """The current span as a W3C traceparent string, for the envelope's ``traceparent``."""
    return _current_injected().traceparent
