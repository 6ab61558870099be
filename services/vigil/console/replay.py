"""Replaying a dead letter from the console: the service's own ``POST /v1/dlq/{id}/replay``, with the user's token.

Exactly what ``vigil dlq replay`` calls (libs/vigil/cli/dlq.py), so the service decides: it requires the admin role,
replays only a letter still ``dead``, sends the original record back to its topic and records the replay in the
audit log under the user's name with the reason. The console adds what a browser needs: a confirmation page, a
required reason and the session's CSRF token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from vigil.console.deps import SessionDep, UpstreamDep, confirmed_reason, page
from vigil.console.upstream import Upstream, UpstreamError
from vigil.console.views import SERVICE_NAMES

router = APIRouter()

Service = Annotated[str, Path(pattern="^(" + "|".join(SERVICE_NAMES) + ")$")]
LetterId = Annotated[int, Path(ge=1, le=2**63 - 1)]
#: A letter id no route accepts: the service checks the role first, then the path (403 before 422).
_PROBE_ID = "role-probe"


async def may_replay(up: Upstream, token: str) -> bool:
    """Whether ``token`` may replay dead letters (the admin role), asked of the service: a replay of an id that
    cannot be valid is refused with 403 for a token without the role and 422 (nothing replayed) for one with it."""
    answer = await up.send("POST", SERVICE_NAMES[0], f"/v1/dlq/{_PROBE_ID}/replay", token)
    return answer.status_code == 422


async def _letter(up: Upstream, token: str, service: str, letter_id: int) -> dict[str, object] | None:
    """The dead letter ``letter_id`` of ``service`` (any status), or None."""
    found = await up.get(service, "/v1/dlq", token, after=letter_id - 1, limit=1)
    items = found.get("items") or []
    return items[0] if items and items[0]["id"] == letter_id else None


@router.get("/dead-letters/{service}/{letter_id}/confirm", response_class=HTMLResponse)
async def confirm(
    request: Request, service: Service, letter_id: LetterId, session: SessionDep, up: UpstreamDep
) -> Response:
    """The confirmation step: what the letter is, why it died, what a replay does, and a required reason."""
    letter = await _letter(up, session.token, service, letter_id)
    if letter is None:
        raise UpstreamError(service, 404, f"no dead letter {letter_id}")
    return page(request, "dlq_confirm.html", session, service=service, letter=letter)


@router.post("/dead-letters/{service}/{letter_id}/replay")
async def replay(
    request: Request,
    service: Service,
    letter_id: LetterId,
    session: SessionDep,
    up: UpstreamDep,
    csrf: Annotated[str, Form(max_length=128)] = "",
    reason: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    checked = confirmed_reason(session, csrf, reason, "a replay")
    if isinstance(checked, HTMLResponse):
        return checked
    try:
        await up.call("POST", service, f"/v1/dlq/{letter_id}/replay", session.token, json={"reason": checked})
    except UpstreamError as exc:
        if exc.status == 0 or exc.status >= 500:
            raise
        return page(request, "dlq_refused.html", session, status_code=exc.status, error=exc, service=service,
                    letter_id=letter_id)  # fmt: skip
    return RedirectResponse(f"/operations?replayed={service}/{letter_id}", status_code=303)
