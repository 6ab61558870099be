"""Route fast paths (``vigil.service.http_middleware.fast_path``): answered without FastAPI's routing and
dependency solving when the handler is sure, by the route itself otherwise — with the body replayed, the route
template in the metrics, the body limit and the caller's trace context still applied.

Built on an ad-hoc service app (``create_app`` with its own router), driven in-process through httpx's ASGI
transport; no broker or database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from opentelemetry import trace
from prometheus_client import REGISTRY
from starlette.types import Scope

from vigil.service.app import create_app
from vigil.service.http_middleware import fast_path
from vigil.service.runtime import ServiceDefinition
from vigil.service.settings import ServiceSettings

pytestmark = pytest.mark.unit

SERVICE = "fasttest"
LIMIT = 1024
#: What each path saw: ("fast" | "route", name, body, trace id of the current span).
seen: list[tuple[str, str, bytes, int]] = []


def _trace_id() -> int:
    return trace.get_current_span().get_span_context().trace_id


async def fast_echo(scope: Scope, params: dict[str, str], body: bytes) -> Response | None:
    seen.append(("fast", params["name"], body, _trace_id()))
    if body.startswith(b"decline"):
        return None
    return Response(orjson.dumps({"by": "fast", "name": params["name"], "bytes": len(body)}), 201)


router = APIRouter(prefix="/v1")


@router.post("/things/{name}/echo", status_code=201)
@fast_path(fast_echo)
async def echo(name: str, request: Request) -> dict[str, Any]:
    body = await request.body()
    seen.append(("route", name, body, _trace_id()))
    return {"by": "route", "name": name, "bytes": len(body)}


@router.get("/things/{name}/echo")
async def echo_get(name: str) -> dict[str, str]:
    return {"by": "get", "name": name}


def make(tmp_path: Path, *routers: APIRouter) -> FastAPI:
    definition = ServiceDefinition(
        name=SERVICE, settings_cls=ServiceSettings, migrations_dir=tmp_path, routers=list(routers)
    )
    return create_app(definition, ServiceSettings(service_name=SERVICE, home=tmp_path, http_max_body_bytes=LIMIT))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    seen.clear()
    transport = httpx.ASGITransport(app=make(tmp_path, router))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def requests_total(method: str, route: str, status: int) -> float:
    labels = {"service": SERVICE, "method": method, "route": route, "status": str(status)}
    return REGISTRY.get_sample_value("vigil_http_requests_total", labels) or 0.0


async def chunks(total: int, size: int = 256) -> AsyncIterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


async def test_the_fast_path_answers_and_is_counted_under_the_route_template(client: httpx.AsyncClient) -> None:
    before = requests_total("POST", "/v1/things/{name}/echo", 201)
    r = await client.post("/v1/things/a1/echo", content=b"hello")
    assert r.status_code == 201 and r.json() == {"by": "fast", "name": "a1", "bytes": 5}
    assert [s[:3] for s in seen] == [("fast", "a1", b"hello")]
    assert requests_total("POST", "/v1/things/{name}/echo", 201) == before + 1


async def test_a_declined_request_gets_the_route_with_the_same_body(client: httpx.AsyncClient) -> None:
    body = b"decline" + b"y" * 600

    async def in_pieces() -> AsyncIterator[bytes]:  # chunked: the fast path joins them, the route gets them whole
        for start in range(0, len(body), 200):
            yield body[start : start + 200]

    r = await client.post("/v1/things/b2/echo", content=in_pieces())
    assert r.status_code == 201 and r.json() == {"by": "route", "name": "b2", "bytes": len(body)}
    assert [s[:3] for s in seen] == [("fast", "b2", body), ("route", "b2", body)]


async def test_other_methods_and_paths_never_reach_the_fast_path(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/things/c3/echo")).json() == {"by": "get", "name": "c3"}
    assert (await client.post("/v1/things/c3/echo/more", content=b"x")).status_code == 404
    assert seen == []


async def test_the_body_limit_still_applies_to_streamed_bodies(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/things/d4/echo", content=chunks(LIMIT * 4))
    assert r.status_code == 413 and r.json() == {"detail": f"request body exceeds {LIMIT} bytes"}
    assert all(kind == "route" or len(body) <= LIMIT for kind, _, body, _ in seen)
    assert not any(kind == "fast" for kind, *_ in seen)  # never handed an over-limit body


async def test_the_callers_trace_context_reaches_the_fast_path(client: httpx.AsyncClient) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    assert (await client.post("/v1/things/e5/echo", content=b"x", headers=headers)).status_code == 201
    assert (await client.post("/v1/things/e5/echo", content=b"x")).status_code == 201
    (_, _, _, continued), (_, _, _, fresh) = seen
    assert continued == int(trace_id, 16)
    assert fresh not in (0, int(trace_id, 16))  # no caller context: a fresh root, still a trace


def test_a_fast_path_an_earlier_route_would_shadow_is_refused(tmp_path: Path) -> None:
    earlier = APIRouter(prefix="/v1")

    @earlier.post("/things/{name}/{action}")
    async def anything(name: str, action: str) -> None: ...

    with pytest.raises(ValueError, match="shadowed"):
        make(tmp_path, earlier, router)


async def _hang_up_mid_body(app: FastAPI, path: str) -> list[dict[str, Any]]:
    """One request whose client sends part of its body and disconnects; the messages the app sent."""
    incoming = [
        {"type": "http.request", "body": b"decline-part", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("path", ["/v1/things/f6/echo", "/v1/raw"])
async def test_a_client_hanging_up_mid_body_is_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """Through the fast path and through a route reading the body itself: a 499 nobody receives, counted under the
    route, and no error (no traceback) in the log."""
    raw = APIRouter(prefix="/v1")

    @raw.post("/raw")
    async def read_it(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    seen.clear()
    template = "/v1/things/{name}/echo" if "things" in path else "/v1/raw"
    before = requests_total("POST", template, 499)
    with caplog.at_level("INFO"):
        sent = await _hang_up_mid_body(make(tmp_path, router, raw), path)
    assert sent[0]["status"] == 499
    assert requests_total("POST", template, 499) == before + 1
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]
    assert any(r.getMessage() == "client disconnected mid-request" for r in caplog.records)
    assert seen == []  # the fast path never saw a partial body
