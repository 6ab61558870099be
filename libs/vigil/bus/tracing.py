"""W3C trace context across Kafka: injected into record headers on produce, extracted on consume."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context

Headers = list[tuple[str, bytes]]

tracer = trace.get_tracer("vigil.bus")


def inject_headers(headers: Headers | None = None) -> Headers:
    """Current trace context as Kafka headers (adds ``traceparent`` and friends)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    out = list(headers or [])
    out.extend((k, v.encode()) for k, v in carrier.items())
    return out


def extract_context(headers: Sequence[tuple[str, bytes]] | None) -> Context:
    """Trace context from Kafka headers (empty context when there is none)."""
    carrier = {k: v.decode(errors="replace") for k, v in (headers or [])}
    return propagate.extract(carrier)


def current_traceparent() -> str | None:
    """The current span as a W3C traceparent string, for the envelope's ``traceparent``."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=otel_context.get_current())
    return carrier.get("traceparent")
