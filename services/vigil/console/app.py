"""The console's FastAPI app: server-rendered pages (Jinja2 + htmx), uPlot charts, server-sent events.

No database, no broker: the lifespan opens one HTTP client for the six services and an in-memory session store.
Every response carries a strict Content-Security-Policy (scripts and styles from this origin only, no inline script),
so the console works air-gapped and an injected string cannot run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vigil.console import actions, feed, pages
from vigil.console.deps import HERE, NotSignedIn, page
from vigil.console.sessions import COOKIE, SessionStore
from vigil.console.settings import ConsoleSettings
from vigil.console.upstream import Upstream, UpstreamError

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Pure-ASGI middleware adding the CSP and friends to every response (streaming ones included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(settings: ConsoleSettings | None = None) -> FastAPI:
    """The console app; ``settings`` default to the environment (``VIGIL_CONSOLE_…``)."""
    cfg = settings or ConsoleSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = cfg
        app.state.sessions = SessionStore(cfg.session_idle_s, cfg.max_sessions)
        app.state.upstream = Upstream(cfg.service_urls(), cfg.upstream_timeout_s)
        try:
            yield
        finally:
            await app.state.upstream.aclose()

    app = FastAPI(title="Vigil console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.include_router(feed.router)

    @app.exception_handler(NotSignedIn)
    async def to_sign_in(request: Request, exc: NotSignedIn) -> Response:
        if request.method == "GET" and request.url.path != "/feed":
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        return HTMLResponse("not signed in", status_code=401)

    @app.exception_handler(UpstreamError)
    async def upstream_error(request: Request, exc: UpstreamError) -> Response:
        status_code = exc.status if 400 <= exc.status < 500 else 502
        session = request.app.state.sessions.get(request.cookies.get(COOKIE))
        return page(request, "error.html", session, status_code=status_code, error=exc)

    @app.get("/healthz", include_in_schema=False)
    @app.get("/readyz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Alive and serving; the services' own health is theirs to tell (``vigil status``)."""
        return {"status": "ok"}

    return app


def main() -> None:
    """``python -m vigil.console``: serve on ``VIGIL_CONSOLE_HTTP_HOST:VIGIL_CONSOLE_HTTP_PORT``."""
    import uvicorn

    cfg = ConsoleSettings()
    # Open live feeds never end by themselves: a stop waits for them at most two seconds.
    uvicorn.run(
        create_app(cfg),
        host=cfg.http_host,
        port=cfg.http_port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
