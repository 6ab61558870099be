"""Base class of every event payload (the CloudEvents ``data``).

A payload class names its wire contract: a stable type string (never a Python path), a major version, the topic
it travels on and the attribute that keys it (so order holds per aggregate). The JSON Schema in ``schemas/`` is the
source of truth; ``tests/unit/events`` keeps these classes equal to it. :func:`register` makes a class known to the
contract checker; the catalog's modules register theirs.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

#: Payload instances that skipped pydantic's validation (``model_construct``, ``model_copy(update=…)``), by
#: identity. Weak: an entry goes when its instance does, so an ``id`` is never mistaken for a later object's.
#: Not a private attribute: pydantic compares those in ``==``, and a payload is equal to its checked twin.
_UNVALIDATED: weakref.WeakValueDictionary[int, EventPayload] = weakref.WeakValueDictionary()


class EventPayload(BaseModel):
    """Frozen, strict payload model. Subclasses set TYPE, VERSION, TOPIC and KEY_FIELD."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, populate_by_name=True)

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str]
    KEY_FIELD: ClassVar[str]

    # The pydantic mypy plugin synthesises a typed model_construct per model; this one wraps pydantic's own.
    @classmethod  # type: ignore[no-redef]
    def model_construct(cls, _fields_set: set[str] | None = None, **values: Any) -> Self:  # type: ignore[override]
        """pydantic's unchecked constructor, remembered as such (see :meth:`is_validated`)."""
        instance = super().model_construct(_fields_set, **values)
        _UNVALIDATED[id(instance)] = instance
        return instance

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """pydantic's copy; with ``update`` (which pydantic does not validate) the copy counts as unvalidated."""
        copied = super().model_copy(update=update, deep=deep)
        if update or not self.is_validated():
            _UNVALIDATED[id(copied)] = copied
        return copied

    def is_validated(self) -> bool:
        """True unless this instance skipped validation: the produce-side check then re-runs the model on it."""
        return _UNVALIDATED.get(id(self)) is not self

    def key(self) -> str:
        """The partition key: the aggregate this event belongs to."""
        return str(getattr(self, self.KEY_FIELD))

    def subject(self) -> str:
        """The CloudEvents subject; by default the aggregate key."""
        return self.key()

    def to_data(self) -> dict[str, Any]:
        """JSON-ready dict for the envelope's ``data``: ``model_dump(mode="json")``, asking the model's serializer
        directly (``model_dump``'s own argument handling was a fifth of the dump, once per produced event)."""
        data: dict[str, Any] = self.__pydantic_serializer__.to_python(self, mode="json")
        return data


#: Every registered payload class by (type, version). Here rather than in :mod:`vigil.events.contracts`, which reads
#: it: the catalog's modules register into it, and the contract checker imports the catalog — no cycle.
PAYLOAD_CLASSES: dict[tuple[str, int], type[EventPayload]] = {}


def register(cls: type[EventPayload]) -> type[EventPayload]:
    """Class decorator: make a payload class known to the contract checker."""
    PAYLOAD_CLASSES[(cls.TYPE, cls.VERSION)] = cls
    return cls
