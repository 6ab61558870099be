"""OpenTelemetry tracer provider per service: off by default, console or OTLP by setting.

Spans cost per request even when nobody receives them, so the HTTP middleware opens a SERVER span only when
:func:`spans_recorded` says someone does: an exporter configured here, a span processor added to our provider
later (tests add an in-memory one), or a tracer provider someone else installed. Without one, the caller's trace
context is still carried through the request (events emitted while answering it continue the caller's trace).
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from vigil.service.settings import ServiceSettings

_configured = False


class VigilTracerProvider(TracerProvider):
    """The SDK provider, counting its span processors: none means every span would be thrown away."""

    processors = 0

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self.processors += 1


def spans_recorded() -> bool:
    """Whether a span started now would reach anyone (see the module docstring)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, VigilTracerProvider):
        return provider.processors > 0
    return isinstance(provider, TracerProvider)  # someone else's SDK provider: theirs to decide


def configure_tracing(settings: ServiceSettings) -> None:
    """Install a tracer provider once per process. ``none`` installs it without a processor: no spans are made
    by the HTTP middleware, context still propagates (see the module docstring)."""
    global _configured
    if _configured:
        return
    provider = VigilTracerProvider(resource=Resource.create({"service.name": f"vigil-{settings.service_name}"}))
    exporter: SpanExporter | None = None
    if settings.otel_exporter == "console":
        exporter = ConsoleSpanExporter()
    elif settings.otel_exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise RuntimeError("VIGIL_OTEL_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http") from exc
        endpoint = settings.otel_exporter_otlp_endpoint
        if endpoint and not endpoint.rstrip("/").endswith("/v1/traces"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"  # the HTTP exporter wants the full signal URL
        exporter = OTLPSpanExporter(endpoint=endpoint)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True
