"""The console's pages (GET) and sign-in / sign-out. Every read goes to the services with the user's token."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from vigil.console import access, graphs, replay, views
from vigil.console.deps import SessionDep, UpstreamDep, page, settings, store
from vigil.console.sessions import COOKIE, Session
from vigil.console.upstream import UpstreamError
from vigil.report.collect import build_model_pack
from vigil.report.render_html import render_html
from vigil.report.sources import NotCheckpointedYet, ReportError, Sources

router = APIRouter()

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
Name = Annotated[str, Path(pattern=NAME)]
ACTIONS = {
    "promote": "Promote the candidate now, skipping the remaining steps",
    "pause": "Pause the rollout where it is (traffic split unchanged)",
    "resume": "Resume the paused rollout",
    "rollback": "Roll back: all traffic to stable now, the candidate marked failed",
}


def _safe_next(target: str | None) -> str:
    """Only a local path: never an open redirect to another site."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str | None = None) -> Response:
    return page(request, "login.html", None, next=_safe_next(next), error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    up: UpstreamDep,
    token: Annotated[str, Form(max_length=512)] = "",
    next: Annotated[str, Form(max_length=512)] = "/",
) -> Response:
    """Check the token with the services, keep it server-side, and set only a session id cookie."""
    token = token.strip()
    if not token:
        return page(request, "login.html", None, status_code=401, next=_safe_next(next), error="Enter a token.")
    found = await access.probe(up, token)
    if not found.valid:
        return page(request, "login.html", None, status_code=401, next=_safe_next(next), error=found.reason)
    sid = store(request).create(Session(token=token, can_act=found.can_act, can_audit=found.can_audit))
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", secure=settings(request).cookie_secure, path="/")
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep, csrf: Annotated[str, Form(max_length=128)] = "") -> Response:
    if not session.csrf_ok(csrf):
        return HTMLResponse("refused: the form's CSRF token does not match this session", status_code=403)
    store(request).drop(request.cookies.get(COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, session: SessionDep, up: UpstreamDep) -> Response:
    data = await views.overview(up, session.token)
    return page(request, "overview.html", session, **data)


@router.get("/deployments/{name}", response_class=HTMLResponse)
async def deployment(request: Request, name: Name, session: SessionDep, up: UpstreamDep) -> Response:
    data = await views.deployment(up, session.token, name)
    return page(request, "deployment.html", session, actions=ACTIONS, **data)


@router.get("/deployments/{name}/confirm/{action}", response_class=HTMLResponse)
async def confirm(
    request: Request,
    name: Name,
    action: Annotated[str, Path(pattern="^(promote|pause|resume|rollback)$")],
    session: SessionDep,
    up: UpstreamDep,
) -> Response:
    """The confirmation step of an action: what it does, to what, and a required reason."""
    dep = await up.get("deployer", f"/v1/deployments/{name}", session.token)
    return page(request, "confirm.html", session, dep=dep, action=action, what=ACTIONS[action])


@router.get("/models/{name}", response_class=HTMLResponse)
async def model(request: Request, name: Name, session: SessionDep, up: UpstreamDep) -> Response:
    data = await views.model(up, session.token, name)
    return page(request, "model.html", session, name=name, **data)


@router.get("/models/{name}/versions/{version}/evidence-pack.{kind}")
async def evidence_pack(
    request: Request,
    name: Name,
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],
    kind: Annotated[str, Path(pattern="^(html|json)$")],
    session: SessionDep,
    up: UpstreamDep,
) -> Response:
    """The version's evidence pack (issue #23) as a download — the readable document (``html``) or the facts with
    their proofs (``json``, what ``vigil report verify`` checks offline). Built by ``vigil.report`` from the services'
    APIs with the signed-in user's own token, exactly as ``vigil report model`` builds it, so it needs the auditor role
    (the pack cites audit entries with their inclusion proofs)."""

    def build() -> dict[str, Any]:
        with Sources(up.urls, session.token) as sources:
            return build_model_pack(sources, name, version, built_by="the Vigil console")

    try:
        pack = await asyncio.to_thread(build)  # the builder's reads are synchronous: keep them off the loop
    except NotCheckpointedYet as exc:  # a fresh version: the auditor signs within its checkpoint interval
        response = page(request, "error.html", session, status_code=503, error=UpstreamError("report", 503, str(exc)))
        response.headers["Retry-After"] = "10"
        return response
    except ReportError as exc:
        text = str(exc)
        code = next((c for c in (403, 404, 401) if f"answered {c}" in text), 0)
        raise UpstreamError("report", code or 502, text) from exc
    disposition = {"Content-Disposition": f'attachment; filename="{name}-v{version}-evidence-pack.{kind}"'}
    if kind == "json":
        return Response(
            json.dumps(pack, indent=1, ensure_ascii=False), media_type="application/json", headers=disposition
        )
    return HTMLResponse(render_html(pack), headers=disposition)


@router.get("/audit", response_class=HTMLResponse)
async def audit(
    request: Request,
    session: SessionDep,
    up: UpstreamDep,
    subject: Annotated[str | None, Query(max_length=512)] = None,
    type: Annotated[str | None, Query(max_length=128)] = None,
    why: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9-]*$")] = None,
    verify: bool = False,
) -> Response:
    """Search entries by entity or event type, walk an event's (or entity's) why chain, verify the chain."""
    if not session.can_audit:
        return page(request, "audit.html", session, status_code=403, forbidden=True)
    subject = (subject or "").strip() or None
    kind = (type or "").strip() or None
    entries = await views.audit_search(up, session.token, subject, kind) if (subject or kind) else None
    chain = await views.why(up, session.token, why or None, None if why else subject)
    checked = await views.verification(up, session.token) if verify else None
    return page(
        request,
        "audit.html",
        session,
        forbidden=False,
        subject=subject or "",
        type=kind or "",
        entries=entries,
        chain=chain,
        graph=graphs.why_graph(chain) if chain else None,
        why=why or "",
        checked=checked,
    )


@router.get("/operations", response_class=HTMLResponse)
async def operations(
    request: Request,
    session: SessionDep,
    up: UpstreamDep,
    replayed: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z]+/[0-9]+$")] = None,
) -> Response:
    """Training jobs and dead letters (with a replay for an admin)."""
    data, admin = await asyncio.gather(views.operations(up, session.token), replay.may_replay(up, session.token))
    return page(request, "operations.html", session, may_replay=admin, replayed=replayed, **data)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job(
    request: Request,
    job_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-fA-F-]+$")],
    session: SessionDep,
    up: UpstreamDep,
) -> Response:
    data = await views.job(up, session.token, job_id)
    return page(request, "job.html", session, **data)


@router.get("/deployments/{name}/monitoring", response_class=HTMLResponse)
async def monitoring(request: Request, name: Name, session: SessionDep, up: UpstreamDep) -> Response:
    data = await views.monitoring(up, session.token, name)
    return page(request, "monitoring.html", session, **data)
