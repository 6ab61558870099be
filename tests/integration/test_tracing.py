"""One trace across HTTP, the outbox, Kafka headers and another service's consumer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from support.services import eventually, make_tokens, running, settings_for
from support.signing import signed_headers
from vigil.auditor.app import make_app as make_auditor
from vigil.auditor.settings import AuditorSettings
from vigil.bus.tracing import current_traceparent, inject_headers
from vigil.events import make_event
from vigil.events.catalog.data import DataUpdated
from vigil.registry.app import make_app as make_registry
from vigil.registry.settings import RegistrySettings

pytestmark = pytest.mark.integration


@pytest.fixture
def spans() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_trace_context_crosses_the_bus(
    spans: InMemorySpanExporter, kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    common: dict[str, Any] = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    async with (
        running(make_registry(settings_for(RegistrySettings, **common))),
        running(make_auditor(settings_for(AuditorSettings, **common))),
    ):
        # An instrumented upstream system publishes data.updated inside its own span.
        upstream = trace.get_tracer("test.upstream")
        update = DataUpdated(
            dataset="traced", content_digest="sha256:" + "cd" * 32, uri="file:///t.csv", row_count=1, producer="t"
        )
        with upstream.start_as_current_span("upstream export") as root:
            envelope = make_event(update, source="ehr://x", actor="system:ehr", traceparent=current_traceparent())
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await producer.start()
            try:
                value = envelope.canonical_bytes()
                await producer.send_and_wait(
                    f"{topic_prefix}vigil.data",
                    value,
                    key=b"traced",
                    headers=inject_headers() + signed_headers(value),
                )
            finally:
                await producer.stop()
        trace_id = root.get_span_context().trace_id

        def finished(name: str) -> list[Any]:
            return [s for s in spans.get_finished_spans() if s.name == name]

        async def registry_processed() -> list[Any]:
            return [
                s
                for s in finished("process data.updated")
                if (s.attributes or {}).get("messaging.consumer.group.name") == f"{topic_prefix}vigil-registry"
            ]

        # The registry handles it record by record: its span is a child in the upstream trace.
        (registry_span,) = await eventually(registry_processed, what="the registry's consumer span")
        assert registry_span.context.trace_id == trace_id
        assert registry_span.kind == trace.SpanKind.CONSUMER

        # The auditor sees both events (the upstream one and the registry's) and its spans belong to, or link to,
        # the same trace — the registration event carried the context on through the outbox.
        async def audited() -> set[str]:
            names = {s.name for s in spans.get_finished_spans() if s.name.startswith("process")}
            traced: set[str] = set()
            for span in spans.get_finished_spans():
                if span.name.startswith("process batch") or span.name.startswith("process dataset"):
                    in_trace = span.context.trace_id == trace_id or any(
                        link.context.trace_id == trace_id for link in span.links
                    )
                    if in_trace:
                        traced.add(span.name)
            return traced if names else set()

        traced = await eventually(audited, what="auditor spans in the upstream trace")
        assert traced
