"""The HTTP middleware every service runs: metrics labelled by route template, SERVER spans, the body limit.

Built on an ad-hoc service app (``create_app`` with its own router) and driven in-process through httpx's ASGI
transport; the lifespan is not started, so no broker or database is involved.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import Receive, Scope, Send

from vigil.service.app import create_app
from vigil.service.http_middleware import BodyLimitMiddleware
from vigil.service.runtime import ServiceDefinition
from vigil.service.settings import ServiceSettings

pytestmark = pytest.mark.unit

SERVICE = "mwtest"
LIMIT = 1024
router = APIRouter()
_endpoint_tasks: list[asyncio.Task[Any] | None] = []


@router.get("/v1/items/{name}")
async def get_item(name: str) -> dict[str, str]:
    _endpoint_tasks.append(asyncio.current_task())
    return {"name": name}


@router.post("/v1/echo")
async def echo(request: Request) -> dict[str, int]:
    return {"bytes": len(await request.body())}


@router.get("/v1/boom")
async def boom() -> None:
    raise RuntimeError("handler bug")


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    definition = ServiceDefinition(
        name=SERVICE, settings_cls=ServiceSettings, migrations_dir=tmp_path, routers=[router]
    )
    return create_app(definition, ServiceSettings(service_name=SERVICE, home=tmp_path, http_max_body_bytes=LIMIT))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # raise_app_exceptions=False: Starlette answers 500 and then re-raises to the server, as it does under uvicorn.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
def spans() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def requests_total(method: str, route: str, status: int) -> float:
    labels = {"service": SERVICE, "method": method, "route": route, "status": str(status)}
    return REGISTRY.get_sample_value("vigil_http_requests_total", labels) or 0.0


def seconds_count(method: str, route: str) -> float:
    labels = {"service": SERVICE, "method": method, "route": route}
    return REGISTRY.get_sample_value("vigil_http_request_seconds_count", labels) or 0.0


async def chunks(total: int, size: int = 256) -> AsyncIterator[bytes]:
    """A body without Content-Length (sent chunked), in ``size`` pieces."""
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


async def test_metrics_are_labelled_with_the_route_template(client: httpx.AsyncClient) -> None:
    before = {
        "item": requests_total("GET", "/v1/items/{name}", 200),
        "item_seconds": seconds_count("GET", "/v1/items/{name}"),
        "unmatched": requests_total("GET", "unmatched", 404),
    }
    for name in ("alpha", "beta", "gamma"):
        assert (await client.get(f"/v1/items/{name}")).status_code == 200
    assert (await client.get("/v1/no/such/path")).status_code == 404

    assert requests_total("GET", "/v1/items/{name}", 200) == before["item"] + 3
    assert seconds_count("GET", "/v1/items/{name}") == before["item_seconds"] + 3
    assert requests_total("GET", "unmatched", 404) == before["unmatched"] + 1
    # The raw path is never a label value.
    assert requests_total("GET", "/v1/items/alpha", 200) == 0.0
    assert requests_total("GET", "/v1/no/such/path", 404) == 0.0


async def test_an_unhandled_error_is_answered_and_counted_as_500(client: httpx.AsyncClient) -> None:
    before = requests_total("GET", "/v1/boom", 500)
    r = await client.get("/v1/boom")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error; see the service log"}
    assert requests_total("GET", "/v1/boom", 500) == before + 1


async def test_server_span_names_the_route_and_continues_the_callers_trace(
    client: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
    assert (await client.get("/v1/items/alpha", headers=headers)).status_code == 200
    assert (await client.get("/v1/no/such/path")).status_code == 404

    # Only ours: FastAPI's native telemetry adds its own spans whenever an SDK tracer provider is installed.
    by_name = {s.name: s for s in spans.get_finished_spans() if s.instrumentation_scope.name == "vigil.http"}
    span = by_name["GET /v1/items/{name}"]
    assert span.kind == trace.SpanKind.SERVER
    assert dict(span.attributes or {}) == {"http.route": "/v1/items/{name}", "http.response.status_code": 200}
    assert span.context.trace_id == int(trace_id, 16)
    assert span.parent is not None and span.parent.span_id == int(parent_id, 16)
    unmatched = by_name["GET unmatched"]
    assert (unmatched.attributes or {})["http.response.status_code"] == 404
    assert unmatched.parent is None


async def test_bodies_over_the_limit_are_refused_by_length_and_while_streaming(client: httpx.AsyncClient) -> None:
    detail = {"detail": f"request body exceeds {LIMIT} bytes"}
    ok = await client.post("/v1/echo", content=chunks(LIMIT))
    assert ok.status_code == 200 and ok.json() == {"bytes": LIMIT}

    declared = await client.post("/v1/echo", content=b"x" * (LIMIT + 1))
    assert declared.status_code == 413 and declared.json() == detail

    before = requests_total("POST", "/v1/echo", 413)
    streamed = await client.post("/v1/echo", content=chunks(LIMIT * 20))
    assert streamed.status_code == 413 and streamed.json() == detail
    # Refused while the route read it: counted under the route.
    assert requests_total("POST", "/v1/echo", 413) == before + 1


async def test_a_streamed_body_is_refused_even_when_read_outside_fastapi() -> None:
    """A bare ASGI app reading the body gets no exception handling from FastAPI: the middleware answers."""
    chunks_read: list[int] = []

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            chunks_read.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break
        raise AssertionError("the over-limit body was delivered whole")

    transport = httpx.ASGITransport(app=BodyLimitMiddleware(raw_app, max_bytes=LIMIT))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.post("/", content=chunks(LIMIT * 4))
    assert r.status_code == 413
    assert r.json() == {"detail": f"request body exceeds {LIMIT} bytes"}
    assert sum(chunks_read) <= LIMIT


async def test_the_endpoint_runs_in_the_callers_task_without_base_http_middleware(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """BaseHTTPMiddleware runs the app in a task of its own (and pays for it on every request)."""
    assert not any(issubclass(m.cls, BaseHTTPMiddleware) for m in app.user_middleware if isinstance(m.cls, type))
    _endpoint_tasks.clear()
    assert (await client.get("/v1/items/alpha")).status_code == 200
    assert _endpoint_tasks == [asyncio.current_task()]
