"""Auditor HTTP API (``/v1``): query the log, walk causes back to the root, verify the chain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from pydantic import BaseModel

from vigil.auditor import store
from vigil.auditor.chain import verify_entries
from vigil.events import parse_json
from vigil.service.auth import Auditor
from vigil.service.pagination import Limit, Page
from vigil.service.runtime import ServiceRuntime

router = APIRouter(prefix="/v1", tags=["audit"])

EventId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
MAX_WHY_DEPTH = 1000


class AuditEntryPublic(BaseModel):
    seq: int
    event_id: str
    event_type: str
    subject: str
    actor: str
    event_time: datetime
    correlation_id: str
    causation_id: str | None
    topic: str
    event_sha256: str
    prev_hash: str
    entry_hash: str
    recorded_at: datetime


class AuditEntryWithEvent(AuditEntryPublic):
    event: dict[str, Any]


class WhyChain(BaseModel):
    """From an event back to the root cause: ``chain[0]`` is the event asked about, the last one the root."""

    chain: list[AuditEntryWithEvent]
    complete: bool
    missing_event_id: str | None = None


class VerifyReport(BaseModel):
    ok: bool
    entries_checked: int
    first_bad_seq: int | None
    problem: str | None


def _runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def _with_event(row: Any) -> AuditEntryWithEvent:
    data = dict(row)
    data["event"] = parse_json(bytes(data.pop("event")))
    return AuditEntryWithEvent(**data)


@router.get("/entries", response_model=Page[AuditEntryPublic])
async def list_entries(
    request: Request,
    _user: Auditor,
    subject: Annotated[str | None, Query(max_length=512)] = None,
    subject_prefix: Annotated[str | None, Query(max_length=512)] = None,
    type: Annotated[str | None, Query(max_length=128)] = None,
    actor: Annotated[str | None, Query(max_length=256)] = None,
    correlation_id: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 100,
    after: Annotated[int, Query(ge=0)] = 0,
) -> Page[AuditEntryPublic]:
    """Audit entries matching all given filters, in chain order."""
    async with _runtime(request).pool.acquire() as conn:
        rows = await store.query_entries(
            conn,
            subject=subject,
            subject_prefix=subject_prefix,
            event_type=type,
            actor=actor,
            correlation_id=correlation_id,
            since=since,
            until=until,
            after_seq=after,
            limit=limit,
        )
    items = [AuditEntryPublic(**r) for r in rows]
    return Page(items=items, next=str(items[-1].seq) if len(items) == limit else None)


@router.get("/events/{event_id}", response_model=AuditEntryWithEvent)
async def get_event(request: Request, event_id: EventId, _user: Auditor) -> AuditEntryWithEvent:
    """One audited event with its entry."""
    async with _runtime(request).pool.acquire() as conn:
        row = await store.get_entry(conn, event_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"event {event_id} is not in the audit log")
    return _with_event(row)


@router.get("/why/{event_id}", response_model=WhyChain)
async def why(request: Request, event_id: EventId, _user: Auditor) -> WhyChain:
    """Walk causation ids from an event back to the upstream event that started it."""
    chain: list[AuditEntryWithEvent] = []
    current: str | None = event_id
    async with _runtime(request).pool.acquire() as conn:
        while current is not None and len(chain) < MAX_WHY_DEPTH:
            row = await store.get_entry(conn, current)
            if row is None:
                if not chain:
                    raise HTTPException(status.HTTP_404_NOT_FOUND, f"event {event_id} is not in the audit log")
                return WhyChain(chain=chain, complete=False, missing_event_id=current)
            entry = _with_event(row)
            chain.append(entry)
            current = entry.causation_id
    return WhyChain(chain=chain, complete=current is None)


@router.get("/verify", response_model=VerifyReport)
async def verify(request: Request, _user: Auditor) -> VerifyReport:
    """Recompute the whole chain and name the first entry that does not hold."""
    async with _runtime(request).pool.acquire() as conn, conn.transaction(readonly=True):
        entries = [e async for e in store.iter_chain(conn)]
    result = verify_entries(entries)
    return VerifyReport(
        ok=result.ok,
        entries_checked=result.entries_checked,
        first_bad_seq=result.first_bad_seq,
        problem=result.problem,
    )
