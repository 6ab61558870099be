"""Security events: a record a consumer refused because of who signed it (docs/security.md).

The auditor writes one ``event.rejected`` entry into the chain per refused record it sees, so forged or unsigned
events are on the record without ever being applied. Its subject is ``rejected/<topic>``, never the entity the
record claims to be about, so an entity's history (``vigil why``) holds only what was applied.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from vigil.events import topics
from vigil.events.payload import EventPayload, register

RejectionReason = Literal["unsigned", "unknown_key", "bad_signature", "malformed_signature", "unauthorised_signer"]


@register
class EventRejected(EventPayload):
    """Where the refused record was, why, its digest, the key it named and what it claimed to be."""

    TYPE: ClassVar[str] = "event.rejected"
    TOPIC: ClassVar[str] = topics.AUDIT
    KEY_FIELD: ClassVar[str] = "topic"

    topic: str = Field(min_length=1, max_length=249)
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    reason: RejectionReason
    detail: str = Field(max_length=1000)
    record_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    key_id: str | None = Field(default=None, max_length=64)
    signer: str | None = Field(default=None, max_length=256)
    claimed_id: str | None = Field(default=None, max_length=256)
    claimed_type: str | None = Field(default=None, max_length=256)
    claimed_actor: str | None = Field(default=None, max_length=256)
    claimed_subject: str | None = Field(default=None, max_length=512)

    def subject(self) -> str:
        return f"rejected/{self.topic}"
