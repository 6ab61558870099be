"""The CloudEvents 1.0 envelope every Vigil event travels in, plus causal links.

``correlationid`` names the root cause of a chain of events and ``causationid`` the direct parent, so the auditor
can walk any state back to the upstream event that started it. ``traceparent`` carries W3C trace context inside the
event too (it is also sent as a Kafka header), so a trace survives a trip through the outbox.
"""

from __future__ import annotations

import time
import weakref
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vigil.events.codec import canonical_json, sha256_hex
from vigil.events.ids import new_id
from vigil.events.payload import EventPayload

SCHEMA_BASE_URI = "https://vigil.dev/schemas/events"

#: Envelopes :func:`make_event` wrapped around a validated payload model, by identity (weak, as in
#: :mod:`vigil.events.payload`). For those the produce-side check need not build the payload model again.
_FROM_VALIDATED_PAYLOAD: weakref.WeakValueDictionary[int, Envelope] = weakref.WeakValueDictionary()


@lru_cache(maxsize=1024)
def dataschema_uri(event_type: str, version: int) -> str:
    """The ``dataschema`` URI of a type and major version; mirrors ``schemas/events/<type>/v<N>.json``."""
    return f"{SCHEMA_BASE_URI}/{event_type}/v{version}.json"


class Envelope(BaseModel):
    """A CloudEvent with Vigil's extensions. Frozen: an event is a fact."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    id: str
    source: str
    type: str
    specversion: Literal["1.0"] = "1.0"
    time: str
    subject: str
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str
    correlationid: str
    causationid: str | None = None
    actor: str
    traceparent: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_checked(cls, raw: dict[str, Any]) -> Envelope:
        """The envelope of a dict that passed ``schemas/envelope/v1.json``, without pydantic's validation pass.

        Why: on consume the schema has just checked everything this model would (strings, the two constants, no
        extra keys; ``tests/unit/events`` compares the result with ``model_validate`` on every example and broken
        variant the schema lets through), and building the model again was a tenth of the bus consumer's CPU
        (issue #9). What ``model_construct`` does, without its per-field alias search. Takes ownership of ``raw``
        (kept as the envelope's fields when it has them all; do not mutate it afterwards). Only for dicts the
        envelope schema accepted.
        """
        # Every field present (what Vigil writes): ``raw`` itself, in wire order — field order matters to nothing
        # but ``repr`` (dumps follow the model's order, ``==`` compares dicts). Else defaults for the missing ones.
        fields = raw if len(raw) == len(_FIELD_DEFAULTS) else {**_FIELD_DEFAULTS, **raw}
        return _assemble(cls, fields, set(raw))  # a set of its own: a model's fields set is not shared

    @property
    def version(self) -> int:
        """Major version of the payload contract, read from ``dataschema`` (``…/v<N>.json``)."""
        return version_from_dataschema(self.dataschema)

    def made_from_validated_payload(self) -> bool:
        """True if :func:`make_event` built this envelope from a payload model that went through validation."""
        return _FROM_VALIDATED_PAYLOAD.get(id(self)) is self

    def wire_dict(self) -> dict[str, Any]:
        """The envelope as the JSON object it travels as, without a pydantic dump (the produce side's hot path).

        Every field is a string, None or ``data``, and ``data`` is JSON already: :func:`make_event` fills it with
        the payload's JSON-mode dump and a decoded envelope holds parsed JSON. ``tests/unit/events`` checks that
        it equals ``model_dump(mode="json")``. A shallow copy: do not mutate ``data`` through it.
        """
        return dict(self.__dict__)

    def canonical_bytes(self) -> bytes:
        """Canonical JSON of the whole envelope: what the auditor hashes."""
        return canonical_json(self.model_dump(mode="json"))

    def digest(self) -> str:
        """sha256 of the canonical envelope."""
        return sha256_hex(self.canonical_bytes())


#: Every field in declaration order with its default (``None`` stands in for required fields, which the schema
#: guarantees are present): :meth:`Envelope.from_checked` fills ``__dict__`` from it.
_FIELD_DEFAULTS: dict[str, Any] = {
    name: None if field.is_required() else field.get_default(call_default_factory=True)
    for name, field in Envelope.model_fields.items()
}
#: The fields :func:`make_event` sets: all but the two constants, as a validated model would record them.
_MADE_FIELDS_SET = frozenset(_FIELD_DEFAULTS) - {"specversion", "datacontenttype"}


def _assemble(cls: type[Envelope], fields: dict[str, Any], fields_set: set[str]) -> Envelope:
    """An envelope holding ``fields`` (every field, any order) as its ``__dict__``, with no validation pass; it owns
    ``fields_set`` (the caller passes a set made for it)."""
    envelope = cls.__new__(cls)
    setattr_ = object.__setattr__
    setattr_(envelope, "__dict__", fields)
    setattr_(envelope, "__pydantic_fields_set__", fields_set)
    setattr_(envelope, "__pydantic_extra__", None)
    setattr_(envelope, "__pydantic_private__", None)
    return envelope


@lru_cache(maxsize=1024)
def version_from_dataschema(uri: str) -> int:
    """Parse the major version out of a dataschema URI; -1 when it has none (so lookups fail loudly)."""
    tail = uri.rsplit("/", 1)[-1]
    if tail.startswith("v") and tail.endswith(".json") and tail[1:-5].isdigit():
        return int(tail[1:-5])
    return -1


def utc_now_iso() -> str:
    """RFC 3339 UTC timestamp, always with six fractional digits (``2026-12-02T05:03:11.123456Z``).

    The date-and-seconds prefix is formatted once per second and reused: ``datetime.now().isoformat()`` per event
    was a few percent of the bus producer's CPU (issue #9).
    """
    global _second_prefix
    now_us = time.time_ns() // 1000
    seconds, micros = divmod(now_us, 1_000_000)
    cached_second, prefix = _second_prefix
    if seconds != cached_second:
        prefix = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_prefix = (seconds, prefix)
    return f"{prefix}.{micros:06d}Z"


_second_prefix: tuple[int, str] = (-1, "")


def make_event(
    payload: EventPayload,
    *,
    source: str,
    actor: str,
    cause: Envelope | None = None,
    subject: str | None = None,
    traceparent: str | None = None,
    event_id: str | None = None,
) -> Envelope:
    """Wrap a payload in an envelope. With ``cause``, inherit its correlation id and point causation at it.

    Built without pydantic's validation pass (a fifth of the bus producer's CPU, issue #9): every field is made
    here (id, type, time, dataschema, the payload's JSON-mode dump) or comes from ``cause``, an envelope already,
    except the caller's strings, which are type-checked below. The envelope schema checks the result again before
    it is written (:func:`vigil.events.contracts.encode_outgoing`); ``tests/unit/events`` compares it with the
    validated model.
    """
    if not (isinstance(source, str) and isinstance(actor, str)):
        _require_str(source=source, actor=actor)
    if not (
        (subject is None or isinstance(subject, str))
        and (traceparent is None or isinstance(traceparent, str))
        and (event_id is None or isinstance(event_id, str))
    ):
        _require_optional_str(subject=subject, traceparent=traceparent, event_id=event_id)
    eid = event_id or new_id()
    fields = {
        "id": eid,
        "source": source,
        "type": payload.TYPE,
        "specversion": "1.0",
        "time": utc_now_iso(),
        "subject": subject if subject is not None else payload.subject(),
        "datacontenttype": "application/json",
        "dataschema": dataschema_uri(payload.TYPE, payload.VERSION),
        "correlationid": cause.correlationid if cause is not None else eid,
        "causationid": cause.id if cause is not None else None,
        "actor": actor,
        "traceparent": traceparent if traceparent is not None else (cause.traceparent if cause is not None else None),
        "data": payload.to_data(),
    }
    envelope = _assemble(Envelope, fields, set(_MADE_FIELDS_SET))
    if payload.is_validated():
        _FROM_VALIDATED_PAYLOAD[id(envelope)] = envelope
    return envelope


def _require_str(**values: object) -> None:
    for name, value in values.items():
        if not isinstance(value, str):
            raise TypeError(f"make_event: {name} must be a string, got {type(value).__name__}")


def _require_optional_str(**values: object) -> None:
    for name, value in values.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"make_event: {name} must be a string or None, got {type(value).__name__}")
