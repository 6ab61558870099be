"""Registry HTTP API for model cards: read a version's card, edit its human sections, sign it off.

Editing takes a scientist or a deployer; signing off takes a deployer (or an admin) — the roles that may approve
what serves. Every edit and sign-off is a ``model.card.*`` event, chained by the auditor. docs/reports.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from vigil.bus.context import Emitter
from vigil.events.catalog.cards import CardField
from vigil.registry import cards
from vigil.registry.decisions import UnknownModelVersion
from vigil.registry.deps import ModelName, VersionNo
from vigil.service.auth import Deployer, Principal, Viewer, require
from vigil.service.bounds import SafeText
from vigil.service.deps import RuntimeDep
from vigil.service.tokens import Role

router = APIRouter(prefix="/v1/models/{name}/versions/{version}/card", tags=["cards"])

CardEditor = Annotated[Principal, Depends(require(Role.SCIENTIST, Role.DEPLOYER))]


class SectionSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[SafeText, Field(max_length=16384)]


class SignOffRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    statement: Annotated[SafeText, Field(max_length=1024)] = ""


class SectionPublic(BaseModel):
    field: str
    text: str
    revision: int
    edited_by: str
    edited_at: datetime
    event_id: str


class SignOffPublic(BaseModel):
    signed_off_by: str
    role: Literal["deployer", "admin"]
    card_sha256: str
    statement: str
    signed_at: datetime
    event_id: str


class CardPublic(BaseModel):
    """The card's human sections (null = never written), its digest, and the newest sign-off; ``signed_off`` is
    true only when that sign-off approved the card as it stands now."""

    model: str
    version: int
    sections: dict[str, SectionPublic | None]
    card_sha256: str
    sign_off: SignOffPublic | None
    signed_off: bool


async def _in_transaction(runtime: Any, user: Principal, work: Any) -> Any:
    try:
        async with runtime.pool.acquire() as conn, conn.transaction():
            result = await work(Emitter(conn, runtime.source, user.actor))
    except UnknownModelVersion as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except cards.CardIncomplete as exc:
        raise HTTPException(422, str(exc)) from exc
    runtime.relay.wake()
    return result


@router.get("", response_model=CardPublic)
async def get_card(runtime: RuntimeDep, name: ModelName, version: VersionNo, _user: Viewer) -> Any:
    """The version's card: human sections, digest, sign-off."""
    async with runtime.pool.acquire() as conn:
        if await conn.fetchval("SELECT 1 FROM model_versions WHERE model = $1 AND version = $2", name, version) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"model {name!r} has no version {version}")
        return await cards.current_card(conn, name, version)


@router.put("/{field}", response_model=SectionPublic | None)
async def edit_section(
    runtime: RuntimeDep, name: ModelName, version: VersionNo, field: CardField, body: SectionSet, user: CardEditor
) -> Any:
    """Set one human section (null answer: it already said that; no event)."""

    async def work(emitter: Emitter) -> Any:
        return await cards.edit_section(
            emitter, model=name, version=version, field=field, text=body.text, actor=user.actor
        )

    return await _in_transaction(runtime, user, work)


@router.post("/sign-off", response_model=SignOffPublic, status_code=status.HTTP_201_CREATED)
async def sign_off(
    runtime: RuntimeDep, name: ModelName, version: VersionNo, body: SignOffRequest, user: Deployer
) -> Any:
    """Sign the card off as it stands (deployer or admin); 422 while a section is empty."""
    role = "admin" if Role.ADMIN in user.roles else "deployer"

    async def work(emitter: Emitter) -> Any:
        return await cards.sign_off(
            emitter, model=name, version=version, actor=user.actor, role=role, statement=body.statement
        )

    return await _in_transaction(runtime, user, work)
