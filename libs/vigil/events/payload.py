"""Base class of every event payload (the CloudEvents ``data``).

A payload class names its wire contract: a stable type string (never a Python path), a major version, the topic
it travels on and the attribute that keys it (so order holds per aggregate). The JSON Schema in ``schemas/`` is the
source of truth; ``tests/unit/events`` keeps these classes equal to it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class EventPayload(BaseModel):
    """Frozen, strict payload model. Subclasses set TYPE, VERSION, TOPIC and KEY_FIELD."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, populate_by_name=True)

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str]
    KEY_FIELD: ClassVar[str]

    def key(self) -> str:
        """The partition key: the aggregate this event belongs to."""
        return str(getattr(self, self.KEY_FIELD))

    def subject(self) -> str:
        """The CloudEvents subject; by default the aggregate key."""
        return self.key()

    def to_data(self) -> dict[str, Any]:
        """JSON-ready dict for the envelope's ``data``."""
        return self.model_dump(mode="json", exclude_none=False)
