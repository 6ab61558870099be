"""Model cards: the human sections of a version's card, edited and signed off, each change an audited event.

Like ``decisions``, each function runs in the caller's transaction and emits its event through the outbox, so an
edit or a sign-off exists if and only if its event does. The model row is locked so revisions count one at a time.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from vigil.bus.context import Emitter
from vigil.events import new_id
from vigil.events.catalog.cards import CARD_FIELDS, ModelCardEdited, ModelCardSignedOff, card_digest
from vigil.registry import store
from vigil.registry.decisions import UnknownModelVersion


class CardIncomplete(ValueError):
    """A sign-off was asked for a card with empty sections."""


async def _lock_version(conn: asyncpg.Connection, model: str, version: int) -> None:
    if await store.lock_model(conn, model) is None or await store.get_model_version(conn, model, version) is None:
        raise UnknownModelVersion(f"model {model!r} has no version {version}")


async def current_card(conn: asyncpg.Connection, model: str, version: int) -> dict[str, Any]:
    """The newest edit of each section, the card's digest, the newest sign-off and whether it covers the card."""
    rows = await conn.fetch(
        """
        SELECT DISTINCT ON (field) field, text, revision, edited_by, edited_at, event_id
          FROM model_card_edits WHERE model = $1 AND version = $2 ORDER BY field, revision DESC
        """,
        model,
        version,
    )
    sections: dict[str, Any] = {name: None for name in CARD_FIELDS}
    sections.update({r["field"]: dict(r) for r in rows})
    digest = card_digest({name: (s or {}).get("text", "") for name, s in sections.items()})
    sign_off = await conn.fetchrow(
        "SELECT * FROM model_card_signoffs WHERE model = $1 AND version = $2 ORDER BY id DESC LIMIT 1",
        model,
        version,
    )
    return {
        "model": model,
        "version": version,
        "sections": sections,
        "card_sha256": digest,
        "sign_off": dict(sign_off) if sign_off else None,
        "signed_off": bool(sign_off) and sign_off["card_sha256"] == digest,
    }


async def edit_section(
    emitter: Emitter, *, model: str, version: int, field: str, text: str, actor: str
) -> dict[str, Any] | None:
    """Set one section; None when it already says exactly that (no change, no event)."""
    conn = emitter.conn
    await _lock_version(conn, model, version)
    last = await conn.fetchrow(
        "SELECT text, revision FROM model_card_edits WHERE model = $1 AND version = $2 AND field = $3"
        " ORDER BY revision DESC LIMIT 1",
        model,
        version,
        field,
    )
    if last is not None and last["text"] == text:
        return None
    revision = 1 if last is None else last["revision"] + 1
    event_id = new_id()
    row = await conn.fetchrow(
        """
        INSERT INTO model_card_edits (model, version, field, text, revision, edited_by, event_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING field, text, revision, edited_by, edited_at, event_id
        """,
        model,
        version,
        field,
        text,
        revision,
        actor,
        event_id,
    )
    payload = ModelCardEdited(model=model, version=version, field=field, text=text, revision=revision, edited_by=actor)
    await emitter.emit(payload, actor=actor, event_id=event_id)
    return dict(row)


async def sign_off(
    emitter: Emitter, *, model: str, version: int, actor: str, role: str, statement: str
) -> dict[str, Any]:
    """Sign the card off as it stands; the same card signed off again returns the existing sign-off (no event)."""
    conn = emitter.conn
    await _lock_version(conn, model, version)
    card = await current_card(conn, model, version)
    empty = [name for name, section in card["sections"].items() if not section or not section["text"].strip()]
    if empty:
        raise CardIncomplete(f"the card cannot be signed off while these sections are empty: {', '.join(empty)}")
    if card["signed_off"]:
        return dict(card["sign_off"])
    event_id = new_id()
    row = await conn.fetchrow(
        """
        INSERT INTO model_card_signoffs (model, version, signed_off_by, role, card_sha256, statement, event_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *
        """,
        model,
        version,
        actor,
        role,
        card["card_sha256"],
        statement,
        event_id,
    )
    payload = ModelCardSignedOff(
        model=model,
        version=version,
        signed_off_by=actor,
        role=role,
        card_sha256=card["card_sha256"],
        statement=statement,
    )
    await emitter.emit(payload, actor=actor, event_id=event_id)
    return dict(row)
