"""Model card events: the human sections of a version's card, edited and signed off through the registry's API.

Topic vigil.models, key model, so the auditor chains every edit and sign-off like any other decision. A sign-off
names the digest of the card text it approved (``card_sha256``); an edit after it changes the digest, so an evidence
pack can tell a signed-off card from one changed since (docs/reports.md).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from vigil.events import topics
from vigil.events.catalog.common import Digest, Name, NoNul, Version
from vigil.events.codec import canonical_json
from vigil.events.payload import EventPayload, register

#: The sections a machine cannot write (the model card's human part).
CardField = Literal["intended_use", "out_of_scope_uses", "risks", "ethical_considerations"]
CARD_FIELDS: tuple[str, ...] = ("intended_use", "out_of_scope_uses", "risks", "ethical_considerations")
CardText = Annotated[str, Field(max_length=16384), NoNul]
Person = Annotated[str, Field(min_length=1, max_length=256), NoNul]


class _CardEvent(EventPayload):
    TOPIC: ClassVar[str] = topics.MODELS
    KEY_FIELD: ClassVar[str] = "model"

    model: Name
    version: Version

    def subject(self) -> str:
        return f"model/{self.model}/v{self.version}/card"


@register
class ModelCardEdited(_CardEvent):
    """One human section of a version's card set to ``text`` (revision counts the edits of that section)."""

    TYPE: ClassVar[str] = "model.card.edited"

    field: CardField
    text: CardText
    revision: int = Field(ge=1)
    edited_by: Person


@register
class ModelCardSignedOff(_CardEvent):
    """A named person with a role allowed to approve (deployer or admin) signed off the card as it stood:
    ``card_sha256`` is the digest of the four sections' texts (``vigil.report.card.card_digest``)."""

    TYPE: ClassVar[str] = "model.card.signed_off"

    signed_off_by: Person
    role: Literal["deployer", "admin"]
    card_sha256: Digest
    statement: Annotated[str, Field(max_length=1024), NoNul] = ""


def card_digest(texts: dict[str, str]) -> str:
    """``sha256:`` + sha256 of the canonical JSON of the four sections' texts (a missing section is ``""``): what a
    sign-off approves, recomputable from the edit events alone."""
    body = {name: texts.get(name) or "" for name in CARD_FIELDS}
    return "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()
