"""The FastAPI application every service is built from: lifespan, health, metrics, limits, errors.

``create_app(definition)`` gives a service its HTTP face; the lifespan starts the runtime (pool, migrations,
topics, relay, consumer) and stops it in reverse. Settings are built inside the lifespan (or passed in by tests),
never at import time.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect

from vigil.service.auth import TokenStore
from vigil.service.dlq_api import router as dlq_router
from vigil.service.http_middleware import (
    CLIENT_CLOSED_REQUEST,
    BodyLimitMiddleware,
    FastPathMiddleware,
    FastPaths,
    RequestMetricsMiddleware,
)
from vigil.service.info_api import router as info_router
from vigil.service.logging import configure_logging
from vigil.service.runtime import ServiceDefinition, ServiceRuntime, start_runtime
from vigil.service.settings import ServiceSettings
from vigil.service.telemetry import configure_tracing

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"})

#: Any route may refuse a request (a missing or wrong token, an unknown name, a conflict, a body over the limit, an
#: invalid value): documented once, for every route, as a ``4XX`` with the error body FastAPI and the services send
#: (``{"detail": ...}``), so clients and schema checks expect it. A route's own codes (``422``, ``404``) stay.
REFUSED_RESPONSES: dict[int | str, dict[str, object]] = {
    "4XX": {
        "description": "Refused; `detail` says why",
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"detail": {}}, "required": ["detail"]},
            }
        },
    }
}


def create_app(
    definition: ServiceDefinition, settings: ServiceSettings | None = None, *, freeze_gc_after_start: bool = False
) -> FastAPI:
    """Build the service's FastAPI app. Pass ``settings`` in tests; otherwise they come from the environment.

    ``freeze_gc_after_start`` (what :func:`run`, the process entry point, asks for) moves everything alive once the
    runtime has started into the collector's permanent generation (:func:`freeze_startup_heap`).
    """
    settings = settings or definition.settings_cls(service_name=definition.name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(definition.name, settings.log_level)
        configure_tracing(settings)
        settings.refuse_unsafe_production()
        token_store = TokenStore(
            settings.resolved_tokens_file(), refuse_dev_tokens=settings.environment == "production"
        )
        token_store.check()
        app.state.token_store = token_store
        runtime = await start_runtime(definition, settings)
        app.state.runtime = runtime
        if freeze_gc_after_start:
            freeze_startup_heap()
        log.info("service started", extra={"port": settings.http_port})
        try:
            yield
        finally:
            await runtime.stop()
            log.info("service stopped")

    app = FastAPI(
        title=f"Vigil {definition.name}",
        version="0.1.0",
        lifespan=lifespan,
        responses=REFUSED_RESPONSES,
        description=(definition.__doc__ or "").strip() or f"Vigil {definition.name} API",
        # FastAPI's own telemetry off: RequestMetricsMiddleware opens the SERVER span and counts the requests, and
        # FastAPI's would add a second SERVER span, operation spans and its per-request bookkeeping on top.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.token_store = TokenStore(settings.resolved_tokens_file())
    # Pure ASGI (see vigil.service.http_middleware); the last added is outermost: metrics and the SERVER span
    # wrap the body limit, so refused bodies are counted and traced too; fast paths (filled in once the routes are
    # included) sit inside both.
    fast_paths = FastPaths()
    app.add_middleware(FastPathMiddleware, paths=fast_paths)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.http_max_body_bytes)
    app.add_middleware(RequestMetricsMiddleware, service=definition.name)
    _add_error_handler(app)
    _add_health_routes(app)
    for router in definition.routers:
        app.include_router(router)
    app.include_router(dlq_router)
    app.include_router(info_router)
    fast_paths.collect(app.routes)
    return app


def _add_error_handler(app: FastAPI) -> None:
    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        """A client that hangs up mid-request is no error of ours: one quiet line, no traceback."""
        log.info("client disconnected mid-request", extra={"path": request.url.path})
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse({"detail": "internal error; see the service log"}, status_code=500)


def _add_health_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "A dependency does not answer yet"}})
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: Postgres and the broker answer and the consumer is running."""
        runtime: ServiceRuntime | None = getattr(request.app.state, "runtime", None)
        if runtime is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        checks = await readiness_checks(runtime)
        ok = all(v == "ok" for v in checks.values())
        # The pid lets a supervisor tell its own child's answer from another process's on the same port.
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": checks, "pid": os.getpid()},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def readiness_checks(runtime: ServiceRuntime) -> dict[str, str]:
    """Each dependency → "ok" or the reason it is not."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2.0), runtime.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        async with asyncio.timeout(2.0):
            ok = await runtime.producer.probe()
        checks["broker"] = "ok" if ok else "no metadata"
    except Exception as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    if runtime.consumer is not None:
        checks["consumer"] = "ok" if runtime.consumer.running else "stopped"
    return checks


#: Net container allocations between two young-generation collections in a service process (CPython's default
#: is 700). See :func:`freeze_startup_heap`.
YOUNG_GENERATION_THRESHOLD = 50_000


def freeze_startup_heap() -> int:
    """Collect once, exclude every object alive now from the cyclic collector's future passes, and let the young
    generation grow to :data:`YOUNG_GENERATION_THRESHOLD` before it is collected.

    Why the freeze: a service process holds ~200k GC-tracked objects after its imports (numpy, scipy, numba,
    faust, pydantic schemas), all alive for the life of the process, and every full collection walks all of them. A
    consumer decoding thousands of events a second allocates enough to trigger those often: in the bus
    benchmark's profile the collector was almost half the consumer's time (docs/benchmarks/loop.md). The cost:
    a cycle among the frozen objects is never collected; what is alive after start-up is meant to stay.

    Why the threshold: a consumer holds a polled batch (500 events, ~30 objects each) while it works on it, so at
    the default threshold of 700 every batch was scanned by a dozen young collections and promoted through the
    older ones before it died — 8 % of the bus consumer's time (issue #9), down to under 1 %. Almost everything a
    service allocates is freed by reference counting; only cyclic garbage waits longer, at most 50k objects.

    Only for a process of its own (not for test processes that start and stop many services). Returns the frozen
    count.
    """
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, gen1, gen2)
    return gc.get_freeze_count()


def run(definition: ServiceDefinition) -> None:
    """Entry point of ``python -m vigil.<service>``: settings from the environment, uvicorn on the HTTP port."""
    import uvicorn

    settings = definition.settings_cls(service_name=definition.name)
    configure_logging(definition.name, settings.log_level)
    uvicorn.run(
        create_app(definition, settings, freeze_gc_after_start=True),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        **settings.uvicorn_tls(),
    )
