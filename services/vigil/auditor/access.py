"""Access audit: every request to the auditor's data routes is itself a chain entry (``access.recorded``).

:class:`AuditedRoute` wraps each route of the audited router. After the route answered (or refused with an HTTP
error) and the caller is known, it appends one entry — who, which route and resource, the status, when — in its own
transaction and publishes it on vigil.audit. It fails closed: if the record cannot be written the caller gets 503,
not the data. Requests without a valid token (401) are not chained, so anonymous traffic cannot grow the log; they
are counted by the HTTP metrics and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.routing import APIRoute

from vigil.auditor import store
from vigil.auditor.store import AUDITOR_PRINCIPAL
from vigil.bus.outbox import OutboxRecord, enqueue_many
from vigil.events import make_event
from vigil.events.catalog.access import AccessRecorded
from vigil.service.auth import Principal, TokenStore
from vigil.service.deps import runtime_of

log = logging.getLogger(__name__)

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}


def caller(request: Request) -> Principal | None:
    """The principal behind the request's bearer token, also when the route refused it (403).

    Resolved from the header rather than ``request.state``: the auth dependency only sets the state on success, and
    some ASGI hosts share one state dict between requests.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    store: TokenStore = request.app.state.token_store
    record = store.lookup(token.strip())
    return None if record is None else Principal(record.principal, record.roles)


async def record_access(request: Request, route: str, status_code: int) -> None:
    """Append one ``access.recorded`` entry for this request (no-op when the caller never authenticated)."""
    principal = caller(request)
    if principal is None:
        return
    runtime = runtime_of(request)
    resource = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    request_id = request.headers.get("x-request-id")
    payload = AccessRecorded(
        service=runtime.definition.name,
        actor=principal.actor,
        method=request.method if request.method in METHODS else "GET",
        route=route,
        resource=resource[:1024],
        status=status_code,
        time=datetime.now(UTC),
        request_id=request_id[:64] if request_id else None,
    )
    envelope = make_event(payload, source=runtime.source, actor=principal.actor)
    item = store.Audited.of(envelope, AccessRecorded.TOPIC, AUDITOR_PRINCIPAL)
    async with runtime.pool.acquire() as conn, conn.transaction():
        await store.append_entries(conn, [item], runtime.parts.get(store.RetentionPolicy))
        await enqueue_many(conn, [OutboxRecord.of(envelope, validate=False)])  # its audit.entry: publisher.py


class AuditedRoute(APIRoute):
    """A route whose every authenticated request is recorded in the audit chain."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        route_path = self.path

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except HTTPException as exc:
                await _record_or_refuse(request, route_path, exc.status_code)
                raise
            await _record_or_refuse(request, route_path, response.status_code)
            return response

        return handler


async def _record_or_refuse(request: Request, route: str, status_code: int) -> None:
    try:
        await record_access(request, route, status_code)
    except Exception as exc:
        log.exception("could not record an access; refusing the request", extra={"route": route})
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "access could not be audited; try again") from exc
