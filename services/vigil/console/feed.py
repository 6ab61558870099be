"""The live feed: server-sent events of the platform's decisions, read from the auditor with the user's token.

The browser talks only to the console. Per open feed the console asks the auditor for entries after the last one it
sent (``GET /v1/entries?after=<seq>``) every ``feed_poll_s`` and forwards the decisions as HTML fragments that htmx's
SSE extension prepends to the list. The auditor records these reads like any other (access audit), so the feed
costs one ``access.recorded`` entry per poll while it is open; the feed itself leaves reads out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from vigil.console import shape
from vigil.console.deps import SessionDep, UpstreamDep, settings, templates
from vigil.console.upstream import Upstream, UpstreamError

router = APIRouter()

#: Decisions shown when a feed opens: those of the last minutes, at most this many.
INITIAL_WINDOW = timedelta(minutes=15)
INITIAL_ITEMS = 25
_PAGE = 500
_KEEPALIVE_S = 15.0


def _event(item: dict[str, Any]) -> bytes:
    html = templates.get_template("_feed_item.html").render(item=item)
    data = "".join(line.strip() for line in html.splitlines())
    return f"event: decision\ndata: {data}\n\n".encode()


async def _after(up: Upstream, token: str, after: int, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Entries after ``after`` (following pages), and the last seq seen."""
    entries: list[dict[str, Any]] = []
    for _ in range(20):
        page = await up.get("auditor", "/v1/entries", token, after=after, limit=_PAGE, **params)
        entries.extend(page["items"])
        if page["items"]:
            after = page["items"][-1]["seq"]
        if page.get("next") is None:
            break
    return entries, after


async def stream(request: Request, up: Upstream, token: str, poll_s: float) -> AsyncIterator[bytes]:
    since = (datetime.now(UTC) - INITIAL_WINDOW).isoformat()
    try:
        entries, last = await _after(up, token, 0, since=since)
    except UpstreamError as exc:
        yield f"event: problem\ndata: the auditor said {exc.status}: {exc.detail}\n\n".encode()
        return
    items = [i for i in (shape.feed_item(e) for e in entries) if i is not None][-INITIAL_ITEMS:]
    for item in items:
        yield _event(item)
    yield b": connected\n\n"
    idle = 0.0
    while not await request.is_disconnected():
        await asyncio.sleep(poll_s)
        try:
            entries, last = await _after(up, token, last)
        except UpstreamError:
            continue  # a passing failure: the next poll goes on from the same place
        sent = False
        for entry in entries:
            line = shape.feed_item(entry)
            if line is not None:
                yield _event(line)
                sent = True
        idle = 0.0 if sent else idle + poll_s
        if idle >= _KEEPALIVE_S:
            idle = 0.0
            yield b": keep-alive\n\n"


@router.get("/feed")
async def feed(request: Request, session: SessionDep, up: UpstreamDep) -> Response:
    if not session.can_audit:
        return HTMLResponse("the live feed reads the audit log: this token lacks the auditor role", status_code=403)
    return StreamingResponse(
        stream(request, up, session.token, settings(request).feed_poll_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
