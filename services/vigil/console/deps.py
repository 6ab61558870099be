"""Request-scoped helpers shared by the console's routes: the signed-in session, templates, the upstream client."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from vigil.console.sessions import COOKIE, Session, SessionStore
from vigil.console.settings import ConsoleSettings
from vigil.console.upstream import Upstream

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals["vendor_ok"] = (HERE / "static" / "vendor" / "uPlot.iife.min.js").is_file()


class NotSignedIn(Exception):
    """Raised by :func:`signed_in`; the app answers with a redirect to the sign-in page."""


def store(request: Request) -> SessionStore:
    sessions: SessionStore = request.app.state.sessions
    return sessions


def upstream(request: Request) -> Upstream:
    up: Upstream = request.app.state.upstream
    return up


def settings(request: Request) -> ConsoleSettings:
    s: ConsoleSettings = request.app.state.settings
    return s


def signed_in(request: Request) -> Session:
    """The session behind the request's cookie, or :class:`NotSignedIn`."""
    session = store(request).get(request.cookies.get(COOKIE))
    if session is None:
        raise NotSignedIn
    return session


SessionDep = Annotated[Session, Depends(signed_in)]
UpstreamDep = Annotated[Upstream, Depends(upstream)]


def page(
    request: Request, template: str, session: Session | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render a page with what every page needs (the session for the header and the CSRF token of its forms)."""
    return templates.TemplateResponse(request, template, {"session": session, **context}, status_code=status_code)


def confirmed_reason(session: Session, csrf: str, reason: str, what: str) -> str | HTMLResponse:
    """An action form's reason (whitespace folded) once its CSRF token matches the session; otherwise the refusal
    to answer with — 403 for the token, 422 for a missing reason. Every console action asks both."""
    if not session.csrf_ok(csrf):
        return HTMLResponse("refused: the form's CSRF token does not match this session", status_code=403)
    folded = " ".join(reason.split())
    if not folded:
        return HTMLResponse(f"refused: {what} needs a reason", status_code=422)
    return folded
