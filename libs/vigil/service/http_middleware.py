"""Pure-ASGI HTTP middleware every service runs: request metrics + SERVER spans, the request body limit, and the
fast paths a hot route may declare (:func:`fast_path`: answered without FastAPI's routing and dependency solving).

Why not Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``): it runs the rest of the app in a task
group behind memory streams, re-wraps ``receive`` and the response body, and so costs a large share of a cheap
request (``GET /healthz``) besides its known pitfalls with streaming responses and context variables. These
classes only wrap ``send`` / ``receive`` of the one ASGI call: the endpoint runs in the caller's task and context.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import HTTPException
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from prometheus_client import Counter, Histogram
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vigil.service.telemetry import spans_recorded

HTTP_REQUESTS = Counter("vigil_http_requests_total", "HTTP requests", ["service", "method", "route", "status"])
HTTP_SECONDS = Histogram("vigil_http_request_seconds", "HTTP request latency", ["service", "method", "route"])

#: Status counted for a request whose client went away before its body arrived (nginx's "client closed request").
#: Nobody receives it; it keeps such requests apart from the service's own errors in the metrics.
CLIENT_CLOSED_REQUEST = 499

#: The ``route`` label of requests no route matched (404s, bodies refused by Content-Length before routing): the
#: raw path would give the metric one series per scanned URL.
UNMATCHED = "unmatched"

_tracer = trace.get_tracer("vigil.http")
log = logging.getLogger(__name__)

EndpointT = TypeVar("EndpointT", bound=Callable[..., Any])


def _carrier(scope: Scope) -> dict[str, str]:
    """Request headers as the propagator reads them (lower-case names; the first of repeated headers wins)."""
    carrier: dict[str, str] = {}
    for name, value in scope.get("headers") or ():
        carrier.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return carrier


class _PropagatedHeaders:
    """The header names the global propagator reads (``traceparent``, ``tracestate``, ``baggage`` by default),
    as bytes, recomputed only when someone installs another propagator."""

    def __init__(self) -> None:
        self._propagator: object = None
        self._names: frozenset[bytes] = frozenset()

    def names(self) -> frozenset[bytes]:
        propagator = propagate.get_global_textmap()
        if propagator is not self._propagator:
            self._names = frozenset(name.lower().encode("latin-1") for name in propagator.fields)
            self._propagator = propagator
        return self._names


_propagated = _PropagatedHeaders()


def _unrecorded_context(scope: Scope) -> otel_context.Context:
    """The request's trace context when no span is recorded: the caller's, or a fresh root (not recorded), so
    what the request emits still carries a trace as it did with a span (cheaper: no span object, no attributes).
    The propagator only runs when the request carries one of its headers (most serving clients send none)."""
    names = _propagated.names()
    if any(name in names for name, _ in scope.get("headers") or ()):
        parent = propagate.extract(_carrier(scope))
        if trace.get_current_span(parent).get_span_context().is_valid:
            return parent
    root = trace.SpanContext(
        trace_id=random.getrandbits(128) or 1,
        span_id=random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(root))


class _Series:
    """The labelled metric children of one (method, route, status), looked up once: ``labels()`` takes a lock and
    builds its key on every call, a few microseconds a request."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._seconds: dict[tuple[str, str], Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        counter = self._requests.get((method, route, status))
        if counter is None:
            counter = self._requests[(method, route, status)] = HTTP_REQUESTS.labels(
                self.service, method, route, str(status)
            )
        histogram = self._seconds.get((method, route))
        if histogram is None:
            histogram = self._seconds[(method, route)] = HTTP_SECONDS.labels(self.service, method, route)
        counter.inc()
        histogram.observe(seconds)


class RequestMetricsMiddleware:
    """One SERVER span per request (child of the caller's W3C trace context) plus the HTTP Prometheus metrics.

    The span only when spans are recorded (:func:`vigil.service.telemetry.spans_recorded`); otherwise the request
    runs in the caller's trace context (or a fresh unrecorded root), which is what events emitted from it carry.

    The span starts as ``"<METHOD> <path>"`` and is renamed ``"<METHOD> <route template>"`` once routing chose a
    route; metrics are labelled with the template (``/v1/datasets/{name}``), never the raw path. A request whose
    handler raised is counted with status 500 — what the outer error handler answers — and the span records the
    exception.
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self._series = _Series(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        method: str = scope["method"]
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if not spans_recorded():
            token = otel_context.attach(_unrecorded_context(scope))
            try:
                await self.app(scope, receive, send_status)
            finally:
                otel_context.detach(token)
                path = getattr(scope.get("route"), "path", UNMATCHED)
                self._series.observe(method, path, status, time.perf_counter() - start)
            return

        parent = propagate.extract(_carrier(scope))
        with _tracer.start_as_current_span(
            f"{method} {scope['path']}", context=parent, kind=trace.SpanKind.SERVER
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                # The router stores the matched route in this same scope dict; absent → nothing matched.
                path = getattr(scope.get("route"), "path", UNMATCHED)
                span.update_name(f"{method} {path}")
                span.set_attribute("http.route", path)
                span.set_attribute("http.response.status_code", status)
                self._series.observe(method, path, status, time.perf_counter() - start)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit; FastAPI lets HTTPException through body
    parsing (any other exception there becomes a 400), and its exception middleware turns it into the 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, body_too_large_detail(max_bytes))


def body_too_large_detail(max_bytes: int) -> str:
    return f"request body exceeds {max_bytes} bytes"


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413, by Content-Length and while streaming (chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:
                    await self._reject(send)
                    return
                break
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watch_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watch_send)
        except BodyTooLarge:
            # Reached us only if nothing below turned it into a response (a body read outside FastAPI's handling).
            if started:
                raise
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = b'{"detail":"' + body_too_large_detail(self.max_bytes).encode() + b'"}'
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------- fast paths
#: What a route's fast path returns: the answer, or None to let the route's full FastAPI handling answer instead.
FastHandler = Callable[[Scope, dict[str, str], bytes], Awaitable[Response | None]]

_FAST_PATH = "__vigil_fast_path__"


def fast_path(handler: FastHandler) -> Callable[[EndpointT], EndpointT]:
    """Give a hot route a fast path: ``handler(scope, path_params, body)`` answers the requests it is sure about
    (typically well-formed, authorised ones) with no FastAPI routing, dependency solving or response model, and
    returns None for anything else — the route's own handling then answers exactly as it would have.

    Why: at batch 1, FastAPI's routing (every route's regex until the match) and dependency solving cost more than
    the gateway's whole prediction (docs/benchmarks/gateway.md). The route stays declared as usual: its OpenAPI, its
    role requirement and its error answers are the ones clients see; the fast path must agree with it."""

    def mark(endpoint: EndpointT) -> EndpointT:
        setattr(endpoint, _FAST_PATH, handler)
        return endpoint

    return mark


@dataclass(frozen=True)
class _FastRoute:
    route: BaseRoute
    methods: frozenset[str]
    regex: re.Pattern[str]
    handler: FastHandler


class FastPaths:
    """The fast paths of an app's routes, collected once its routes are included (:meth:`collect`)."""

    def __init__(self) -> None:
        self.routes: list[_FastRoute] = []
        self.methods: frozenset[str] = frozenset()

    def collect(self, routes: Iterable[BaseRoute]) -> None:
        """Every route marked with :func:`fast_path`. The router answers a request with the first route that
        matches it, so a marked route that an earlier route of the same method would take requests from (tried with
        its template's parameters filled in) is refused here (ValueError) rather than served differently."""
        earlier: list[RouteContext] = []
        for context in iter_route_contexts(list(routes)):  # included routers' routes with their full paths
            route = context.original_route
            methods = frozenset(context.methods or ())
            handler = getattr(context.endpoint, _FAST_PATH, None)
            if handler is not None and isinstance(route, APIRoute):
                sample = re.sub(r"\{[^}]+\}", "x", context.path or "")
                for other in earlier:
                    if (other.methods or set()) & methods and other.path_regex.match(sample):
                        raise ValueError(f"fast path {context.path} is shadowed by an earlier route {other.path}")
                self.routes.append(_FastRoute(route, methods, context.path_regex, handler))
            earlier.append(context)
        self.methods = frozenset(m for r in self.routes for m in r.methods)

    def match(self, method: str, path: str) -> tuple[_FastRoute, dict[str, str]] | None:
        if method not in self.methods:
            return None
        for fast in self.routes:
            if method in fast.methods:
                found = fast.regex.match(path)
                if found is not None:
                    return fast, found.groupdict()
        return None


class _Disconnected(Exception):
    """The client went away before its body arrived: nothing to answer, nothing to log."""


class FastPathMiddleware:
    """Innermost middleware: requests for a route with a fast path (:func:`fast_path`) are answered by it; the rest
    — and whatever the fast path declines — go to FastAPI's router, the body already read replayed to it.

    Sits inside the metrics and body-limit middleware (so fast answers are counted, traced and size-limited like
    any other) and sets ``scope["route"]`` like the router does, so metrics carry the route's template."""

    def __init__(self, app: ASGIApp, paths: FastPaths) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (found := self.paths.match(scope["method"], scope["path"])) is None:
            await self.app(scope, receive, send)
            return
        fast, params = found
        scope["route"] = fast.route
        scope["path_params"] = params
        try:
            body = await _read_body(receive)
        except _Disconnected:  # as the app answers a route that met ClientDisconnect (vigil.service.app)
            log.info("client disconnected mid-request", extra={"path": scope["path"]})
            await Response(status_code=CLIENT_CLOSED_REQUEST)(scope, receive, send)
            return
        except BodyTooLarge as exc:  # the route's own handling answers it in its own error format
            await self.app(scope, _raising(exc), send)
            return
        response = await fast.handler(scope, params, body)
        if response is None:
            await self.app(scope, _replaying(body, receive), send)
            return
        await response(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _raising(exc: Exception) -> Receive:
    async def receive() -> Message:
        raise exc

    return receive
