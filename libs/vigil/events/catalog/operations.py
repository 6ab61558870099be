"""Operations events: what an operator did to the platform's plumbing through a service's API.

A dead-letter replay puts a record the service had given up on back on the bus, so every consumer of its topic gets
it again: an admin's decision, audited like one. The service that replayed emits ``dlq.replayed`` in the transaction
that marks the letter replayed and queues the record, naming the admin and their reason.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from vigil.events import topics
from vigil.events.catalog.common import Name, NoNul
from vigil.events.payload import EventPayload, register

Person = Annotated[str, Field(min_length=1, max_length=256), NoNul]
Short = Annotated[str, Field(min_length=1, max_length=256), NoNul]


@register
class DeadLetterReplayed(EventPayload):
    """A service sent one of its dead letters back to its topic (``POST /v1/dlq/{id}/replay``, admin only): which
    letter, where its record came from, what event it claimed to be, why it had died, who replayed it and why."""

    TYPE: ClassVar[str] = "dlq.replayed"
    # Any control-plane topic reaches the auditor; vigil.data, where inputs enter the platform, carries it (a
    # replay re-delivers an input). Its consumers other than the auditor have no handler for it and skip it.
    TOPIC: ClassVar[str] = topics.DATA
    KEY_FIELD: ClassVar[str] = "service"

    service: Name
    letter_id: int = Field(ge=1)
    topic: Annotated[str, Field(min_length=1, max_length=249), NoNul]
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    event_id: Short | None = None
    event_type: Short | None = None
    dead_reason: Annotated[str, Field(min_length=1, max_length=128), NoNul]
    attempts: int = Field(ge=0)
    replayed_by: Person
    reason: Annotated[str, Field(max_length=1024), NoNul]

    def subject(self) -> str:
        """``dlq/<service>/<letter id>``: a letter's history is a subject query."""
        return f"dlq/{self.service}/{self.letter_id}"
