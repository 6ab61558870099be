"""The console's actions: promote / pause / resume / rollback, sent to the deployer with the user's own token.

Each needs the session's CSRF token and a reason. The console decides nothing itself: the deployer checks the role
and the rollout's state and records the move (and its audit entry) under the user's name; a refusal is shown with
the deployer's reason and status.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from vigil.console import replay
from vigil.console.deps import SessionDep, UpstreamDep, confirmed_reason, page
from vigil.console.pages import Name
from vigil.console.upstream import UpstreamError

router = APIRouter()
router.include_router(replay.router)  # dead-letter replay (admin), the same confirmation, reason and CSRF


@router.post("/deployments/{name}/actions/{action}")
async def act(
    request: Request,
    name: Name,
    action: Annotated[str, Path(pattern="^(promote|pause|resume|rollback)$")],
    session: SessionDep,
    up: UpstreamDep,
    csrf: Annotated[str, Form(max_length=128)] = "",
    reason: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    checked = confirmed_reason(session, csrf, reason, "an action")
    if isinstance(checked, HTMLResponse):
        return checked
    try:
        await up.call("POST", "deployer", f"/v1/deployments/{name}/{action}", session.token, json={"reason": checked})
    except UpstreamError as exc:
        if exc.status == 0 or exc.status >= 500:
            raise
        return page(request, "refused.html", session, status_code=exc.status, error=exc, name=name, action=action)
    return RedirectResponse(f"/deployments/{name}?done={action}", status_code=303)
