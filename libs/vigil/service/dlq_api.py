"""Dead-letter routes every service gets: list what this consumer gave up on, replay one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field

from vigil.bus.context import Emitter
from vigil.bus.dead_letters import list_dead_letters, replay_dead_letter
from vigil.events.catalog.operations import DeadLetterReplayed
from vigil.service.auth import Admin, Viewer
from vigil.service.bounds import BigInt, BigIntCursor
from vigil.service.deps import PoolDep, RuntimeDep
from vigil.service.pagination import Limit, Page

router = APIRouter(prefix="/v1/dlq", tags=["dead letters"])


class DeadLetterPublic(BaseModel):
    id: int
    event_id: str | None
    event_type: str | None
    topic: str
    partition: int
    offset: int
    key: str | None
    reason: str
    error: str
    attempts: int
    status: str
    size: int | None
    created_at: datetime
    updated_at: datetime


@router.get("", response_model=Page[DeadLetterPublic])
async def list_letters(
    pool: PoolDep,
    _user: Viewer,
    limit: Limit = 100,
    after: BigIntCursor = 0,
    status: Literal["dead", "replayed"] | None = None,
) -> Page[DeadLetterPublic]:
    """Dead letters of this service's consumer, oldest first."""
    async with pool.acquire() as conn:
        rows = await list_dead_letters(conn, status=status, limit=limit, after_id=after)
    items = [DeadLetterPublic(**r) for r in rows]
    return Page(items=items, next=str(items[-1].id) if len(items) == limit else None)


class ReplayRequest(BaseModel):
    """Why the record goes back on the bus (recorded in the audit log with the replay)."""

    reason: Annotated[str, Field(max_length=1024)] = ""


@router.post("/{letter_id}/replay", status_code=202)
async def replay(
    runtime: RuntimeDep,
    letter_id: Annotated[BigInt, Path(description="dead letter id")],
    user: Admin,
    body: ReplayRequest | None = None,
) -> dict[str, object]:
    """Send a dead letter's original record back to its topic (after fixing what made it fail), and audit it:
    ``dlq.replayed`` names the admin and their reason, in the same transaction."""
    reason = " ".join((body.reason if body else "").replace("\x00", "").split())
    async with runtime.pool.acquire() as conn, conn.transaction():
        letter = await replay_dead_letter(conn, letter_id)
        if letter is not None:
            await Emitter(conn, runtime.source, user.actor).emit(
                DeadLetterReplayed(
                    service=runtime.definition.name,
                    letter_id=letter_id,
                    topic=letter["topic"],
                    partition=letter["partition"],
                    offset=letter["offset"],
                    event_id=letter["event_id"],
                    event_type=letter["event_type"],
                    dead_reason=letter["reason"],
                    attempts=letter["attempts"],
                    replayed_by=user.actor,
                    reason=reason,
                )
            )
    if letter is None:
        raise HTTPException(404, f"no dead letter {letter_id} in state 'dead'")
    runtime.relay.wake()
    return {"replayed": letter_id}
