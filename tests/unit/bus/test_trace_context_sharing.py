"""Trace context on consume: extracted once per distinct set of propagation headers, linked once per upstream span."""

from __future__ import annotations

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from vigil.bus.consumer import MAX_BATCH_LINKS, batch_links
from vigil.bus.tracing import extract_context

pytestmark = pytest.mark.unit


def _traceparent(trace_id: int, span_id: int) -> bytes:
    return f"00-{trace_id:032x}-{span_id:016x}-01".encode()


def _span_ids(ctx: otel_context.Context) -> tuple[int, int]:
    span_context = trace.get_current_span(ctx).get_span_context()
    return span_context.trace_id, span_context.span_id


def test_records_of_one_span_share_one_context_and_others_do_not() -> None:
    a1 = extract_context([("ce_type", b"t"), ("ce_id", b"1"), ("traceparent", _traceparent(1, 2))])
    a2 = extract_context([("ce_id", b"2"), ("traceparent", _traceparent(1, 2)), ("ce_type", b"t")])
    b = extract_context([("ce_id", b"3"), ("traceparent", _traceparent(1, 3))])
    assert a1 is a2, "same propagation headers, different ce_id: one shared context"
    assert _span_ids(a1) == (1, 2)
    assert _span_ids(b) == (1, 3)
    assert trace.get_current_span(a1).get_span_context().is_remote


def test_extraction_does_not_inherit_the_callers_context() -> None:
    """A record without trace headers gets an empty context even when the caller is inside a span."""
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("caller"):
        ctx = extract_context([("ce_id", b"x")])
    assert not trace.get_current_span(ctx).get_span_context().is_valid
    assert not trace.get_current_span(extract_context(None)).get_span_context().is_valid


def test_a_malformed_traceparent_gives_an_empty_context() -> None:
    ctx = extract_context([("traceparent", b"not-a-traceparent")])
    assert not trace.get_current_span(ctx).get_span_context().is_valid


def test_batch_links_one_per_upstream_span_in_order_and_capped() -> None:
    contexts = [extract_context([("traceparent", _traceparent(7, 1 + i % 3))]) for i in range(500)]
    contexts.insert(0, extract_context(None))  # no trace: no link
    links = batch_links(contexts)
    assert [(link.context.trace_id, link.context.span_id) for link in links] == [(7, 1), (7, 2), (7, 3)]
    many = [extract_context([("traceparent", _traceparent(9, 1 + i))]) for i in range(MAX_BATCH_LINKS + 50)]
    capped = batch_links(many)
    assert len(capped) == MAX_BATCH_LINKS
    assert [link.context.span_id for link in capped] == list(range(1, MAX_BATCH_LINKS + 1))


def test_injected_headers_follow_the_current_context() -> None:
    """Injection is cached per context object: each span, and each baggage change, still gets its own headers."""
    from opentelemetry import baggage

    from vigil.bus.tracing import current_traceparent, inject_headers

    tracer = TracerProvider().get_tracer("test")
    assert current_traceparent() is None and inject_headers([("ce_id", b"1")]) == [("ce_id", b"1")]
    seen = set()
    for _ in range(3):
        with tracer.start_as_current_span("producer") as span:
            ids = span.get_span_context()
            expected = f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"
            assert current_traceparent() == expected
            assert dict(inject_headers())["traceparent"] == expected.encode()
            token = otel_context.attach(baggage.set_baggage("tenant", "clinic-7"))
            try:
                assert dict(inject_headers())["baggage"] == b"tenant=clinic-7"
            finally:
                otel_context.detach(token)
            assert "baggage" not in dict(inject_headers())
            seen.add(expected)
    assert len(seen) == 3
    assert current_traceparent() is None
