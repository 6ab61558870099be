"""Event contracts: the JSON Schemas under ``schemas/`` checked on produce and on consume.

The schemas are the source of truth that upstream systems code against. Every event is checked against both: the
envelope against ``schemas/envelope/v1.json`` and the payload against ``schemas/events/<type>/v<N>.json`` (for a
current version by one combined validator, see :func:`_whole_event_validator`); then the typed payload model is
built (by the bus consumer on first read where the model checks nothing more, see :func:`decode_event_deferred`).
Anything that fails raises :class:`ContractError` with a reason that is fit to put in a dead-letter record or a 4xx
body.
"""

from __future__ import annotations

import os
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
from pydantic import BaseModel

from vigil.events import upcast
from vigil.events.codec import EncodingError, canonical_json, parse_json
from vigil.events.envelope import Envelope, dataschema_uri, version_from_dataschema
from vigil.events.payload import PAYLOAD_CLASSES, EventPayload

MAX_DETAIL_CHARS = 300  # of a schema error's message: what a dead letter or a 4xx body quotes
MAX_EVENT_BYTES = 1_048_576  # 1 MiB: larger records are refused (Kafka's default message.max.bytes is ~1 MiB too)


class ContractError(ValueError):
    """An event breaks its contract. ``reason`` is a short machine-friendly code, ``detail`` the human message."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def schemas_dir() -> Path:
    """Where the schemas live: ``VIGIL_SCHEMAS_DIR``, the repo's ``schemas/`` (editable install) or package data."""
    override = os.environ.get("VIGIL_SCHEMAS_DIR")
    if override:
        return Path(override)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "schemas" / "envelope" / "v1.json"
        if candidate.is_file():
            return candidate.parent.parent
    packaged = here.parent.parent / "_schemas"
    if packaged.is_dir():
        return packaged
    raise FileNotFoundError("cannot locate the schemas/ directory; set VIGIL_SCHEMAS_DIR")


@cache
def _load_schema(relative: str) -> dict[str, Any]:
    path = schemas_dir() / relative
    loaded: dict[str, Any] = parse_json(path.read_bytes())
    return loaded


@cache
def _validator(relative: str) -> jsonschema_rs.Validator:
    """The compiled validator of one schema file, built once per process.

    jsonschema-rs (Rust) rather than a Python validator: the contract check runs for every event at both ends
    and was the largest CPU cost of the bus (issue #9, docs/benchmarks/loop.md). ``validate_formats`` makes
    ``date-time`` and the other formats assertions, as the spec's format-assertion vocabulary and the
    reference validator in ``tests/unit/events`` (jsonschema with its format checker) treat them.
    """
    return jsonschema_rs.validator_for(_load_schema(relative), validate_formats=True)


def payload_schema_path(event_type: str, version: int) -> str:
    """Relative path of a payload schema file."""
    return f"events/{event_type}/v{version}.json"


def registered() -> dict[tuple[str, int], type[EventPayload]]:
    """All known (type, version) → payload class."""
    _ensure_catalog_loaded()
    return dict(PAYLOAD_CLASSES)


_catalog_loaded = False


def _ensure_catalog_loaded() -> None:
    global _catalog_loaded
    if not _catalog_loaded:  # the flag: an import statement per call showed in the bus profile
        import vigil.events.catalog  # noqa: F401  (import registers every payload class)

        _catalog_loaded = True


def payload_class(event_type: str, version: int) -> type[EventPayload]:
    """The payload class for a type and version, or ContractError(unknown_type / unknown_version)."""
    _ensure_catalog_loaded()
    cls = PAYLOAD_CLASSES.get((event_type, version))
    if cls is not None:
        return cls
    if any(t == event_type for t, _ in PAYLOAD_CLASSES):
        known = sorted(v for t, v in PAYLOAD_CLASSES if t == event_type)
        raise ContractError("unknown_version", f"{event_type} v{version} is not supported (known: {known})")
    raise ContractError("unknown_type", f"unknown event type {event_type!r}")


def _check(relative: str, value: Any, what: str) -> None:
    validator = _validator(relative)
    try:
        if validator.is_valid(value):  # the happy path: one call, no error objects built
            return
        validator.validate(value)
    except jsonschema_rs.ValidationError as exc:
        raise ContractError("schema_violation", f"{what}: {_describe(exc)}") from exc
    except (ValueError, TypeError) as exc:  # a value that is not JSON at all (a set, a datetime, a huge int)
        raise ContractError("schema_violation", f"{what}: not a JSON value: {exc}"[:MAX_DETAIL_CHARS]) from exc
    raise AssertionError("is_valid and validate disagree")  # pragma: no cover


def _describe(exc: jsonschema_rs.ValidationError) -> str:
    """Where and why, bounded: the validator quotes the offending value, which may be megabytes (or patient data)."""
    where = "/".join(str(part) for part in exc.instance_path) or "(root)"
    message = exc.message
    if len(message) > MAX_DETAIL_CHARS:
        message = message[: MAX_DETAIL_CHARS - 1] + "…"
    return f"at {where}: {message}"


def _resolve_payload(event_type: str, version: int, data: Any) -> tuple[type[EventPayload], Any]:
    """Check ``data`` against its schema; lift it through upcasters when its version has no payload class."""
    _ensure_catalog_loaded()
    what = f"{event_type} v{version} data"
    cls = PAYLOAD_CLASSES.get((event_type, version))
    if cls is not None or not upcast.has_upcaster(event_type, version):
        cls = payload_class(event_type, version)  # raises unknown_type / unknown_version
        _check(payload_schema_path(event_type, version), data, what)
        return cls, data
    _check(payload_schema_path(event_type, version), data, what)  # old events still obey their own contract
    try:
        lifted = upcast.upcast(event_type, version, data, lambda v: (event_type, v) in PAYLOAD_CLASSES)
    except Exception as exc:  # an upcaster is user code: any failure is this event's problem, not the consumer's
        raise ContractError("upcast_failed", f"{what}: {type(exc).__name__}: {exc}") from exc
    if lifted is None:
        payload_class(event_type, version)  # the chain broke before a known version: unknown_version
        raise AssertionError("unreachable")  # pragma: no cover
    target, data = lifted
    _check(payload_schema_path(event_type, target), data, f"{event_type} v{target} data (upcast from v{version})")
    return PAYLOAD_CLASSES[(event_type, target)], data


def _checked_contract(raw: Any) -> tuple[type[EventPayload], Any]:
    """The schema half of the check: envelope schema, dataschema, payload schema (after any upcast).

    Returns the payload class and the payload data to build it from.
    """
    if not isinstance(raw, dict):
        raise ContractError("schema_violation", "event must be a JSON object")
    whole = _whole_event_validator(raw.get("type"), raw.get("dataschema"))
    if whole is not None:
        cls, validator = whole
        try:
            if validator.is_valid(raw):
                return cls, raw["data"]
        except (ValueError, TypeError):
            pass  # not JSON at all: the checks below say where
    _check("envelope/v1.json", raw, "envelope")
    event_type = raw["type"]
    version = version_from_dataschema(raw["dataschema"])
    if version >= 0 and raw["dataschema"] != dataschema_uri(event_type, version):
        raise ContractError(
            "dataschema_mismatch", f"dataschema {raw['dataschema']!r} is not the schema of {event_type}"
        )
    return _resolve_payload(event_type, version, raw["data"])


def _whole_event_validator(
    event_type: Any, dataschema: Any
) -> tuple[type[EventPayload], jsonschema_rs.Validator] | None:
    """One validator for the envelope and its payload together, for an event of a current version; else None.

    Why: the envelope schema and the payload schema were two calls into the validator per event, each converting
    the whole event (data included) into the validator's values first — at both ends of the bus (issue #9). The
    combined schema is the envelope schema with ``data`` held to the payload schema as well, so it accepts exactly
    what the two checks accept together (``tests/unit/events`` compares them). It only says yes or no: an event it
    refuses goes through the two checks, which name the reason and the place. Events of older versions (upcast)
    and unknown types always take that path.

    Found pairs are remembered by (type, dataschema) — one dict lookup per event instead of five calls (issue #20's
    bus overhead) — and each use checks its class is still the registered one. Only registered pairs are kept, so
    strings from the wire cannot grow the table.
    """
    if not (isinstance(event_type, str) and isinstance(dataschema, str)):
        return None
    found = _WHOLE_EVENT.get((event_type, dataschema))
    if found is not None and PAYLOAD_CLASSES.get(found[2]) is found[0]:
        return found[0], found[1]
    _ensure_catalog_loaded()
    version = version_from_dataschema(dataschema)
    cls = PAYLOAD_CLASSES.get((event_type, version))
    if cls is None or dataschema != dataschema_uri(event_type, version):
        return None
    validator = _combined_validator(event_type, version)
    _WHOLE_EVENT[(event_type, dataschema)] = (cls, validator, (event_type, version))
    return cls, validator


#: (type, dataschema) → (payload class, combined validator, its key in PAYLOAD_CLASSES), for registered pairs only.
_WHOLE_EVENT: dict[tuple[str, str], tuple[type[EventPayload], jsonschema_rs.Validator, tuple[str, int]]] = {}


@cache  # one per registered (type, version): the wire's strings never reach this key
def _combined_validator(event_type: str, version: int) -> jsonschema_rs.Validator:
    envelope = _load_schema("envelope/v1.json")
    payload = _load_schema(payload_schema_path(event_type, version))
    payload.pop("examples", None)
    data = {"allOf": [envelope["properties"]["data"], payload]}
    combined = {**envelope, "properties": {**envelope["properties"], "data": data}}
    combined.pop("$id", None)  # not the envelope's resource: the payload keeps its own $id for its $refs
    return jsonschema_rs.validator_for(combined, validate_formats=True)


def _payload_model(cls: type[EventPayload], data: Any) -> EventPayload:
    """The typed payload (its model's cross-field rules), or ContractError(model_violation)."""
    try:
        return cls.model_validate(data)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ContractError("model_violation", str(exc).splitlines()[0] + ": " + str(exc)[:500]) from exc


def validate_envelope_dict(raw: Any) -> tuple[Envelope, EventPayload]:
    """Check a parsed event against envelope + payload schemas and return the envelope and typed payload.

    The payload is of the newest registered version: an older event is upcast (see :mod:`vigil.events.upcast`);
    the envelope keeps the data exactly as written.
    """
    cls, data = _checked_contract(raw)
    payload = _payload_model(cls, data)
    return Envelope.from_checked(raw), payload  # the envelope schema said all its model would (from_checked)


def _parse_wire(raw: bytes | None) -> Any:
    """Bytes from the wire → parsed JSON, or ContractError (empty, too large, malformed)."""
    if raw is None:
        raise ContractError("empty", "record has no value")
    if len(raw) > MAX_EVENT_BYTES:
        raise ContractError("too_large", f"event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}")
    try:
        return parse_json(raw)
    except EncodingError as exc:
        raise ContractError("malformed_json", str(exc)) from exc


def decode_event(raw: bytes | None) -> tuple[Envelope, EventPayload]:
    """Bytes from the wire → (envelope, payload), or ContractError with the reason."""
    return validate_envelope_dict(_parse_wire(raw))


def decode_event_deferred(raw: bytes | None) -> tuple[Envelope, type[EventPayload], EventPayload | None]:
    """Like :func:`decode_event`, but the payload model is left unbuilt (``None``) when its schema says all it would.

    Why: building the typed payload was the largest cost left in the bus consumer (issue #9), and batch handlers
    often never look at it (the auditor stores envelopes). The verdict does not change: for a class of
    :func:`model_adds_nothing` the schema check that just passed is the model's check too (``tests/unit/events``
    feeds every schema-accepted variant to the model), so building it later cannot fail for the event's content.
    Events that were upcast, or whose class has validators or non-JSON field types, get their model here.
    """
    parsed = _parse_wire(raw)
    cls, data = _checked_contract(parsed)
    deferred = data is parsed["data"] and model_adds_nothing(cls)
    payload = None if deferred else _payload_model(cls, data)
    return Envelope.from_checked(parsed), cls, payload


#: Field types whose pydantic check is the JSON Schema's: JSON's own types (constraints such as ``ge`` or
#: ``pattern`` have schema twins, compared by ``tests/unit/events``). Not datetimes: the schema's ``date-time``
#: allows a leap second that Python refuses.
_JSON_NATIVE = (str, int, float, bool, type(None))


@cache
def model_adds_nothing(cls: type[BaseModel]) -> bool:
    """True if ``cls`` refuses nothing its JSON Schema accepts: no validators of its own, every field of a JSON
    type (``str``, ``int``, ``float``, ``bool``, ``None``, ``Literal`` of those, lists and string-keyed dicts of
    them, unions of them) or a model of the same kind."""
    decorators = cls.__pydantic_decorators__
    if decorators.validators or decorators.field_validators or decorators.root_validators:
        return False
    if decorators.model_validators:
        return False
    return all(_json_native(field.annotation) for field in cls.model_fields.values())


def _json_native(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return model_adds_nothing(annotation)
        return annotation in _JSON_NATIVE
    if origin is typing.Literal:
        return all(isinstance(a, _JSON_NATIVE) for a in args)
    if origin is typing.Annotated:
        return _json_native(args[0])
    if origin in (list, typing.Union, types.UnionType):
        return all(_json_native(a) for a in args)
    if origin is dict:
        return len(args) == 2 and args[0] is str and _json_native(args[1])
    return False


def encode_outgoing(envelope: Envelope) -> bytes:
    """Validate an event we are about to write and return its canonical bytes (what goes on the wire).

    One dict serves both: the envelope's JSON object (:meth:`Envelope.wire_dict`) is checked (envelope schema,
    dataschema, payload schema — so nothing that breaks its contract leaves a service) and encoded, so the bytes
    are exactly :meth:`Envelope.canonical_bytes`. The payload model is built again when the envelope did not come
    from :func:`make_event` with a validated payload: payloads made with ``model_construct`` (the deployer's
    batcher) skip pydantic's checks, and this is where their cross-field rules are enforced. The envelope model is
    not: ``envelope`` is one already, and its model adds nothing to its schema (plain strings, two constants, no
    extra keys — all said by the schema, which is checked here).
    """
    dumped = envelope.wire_dict()
    cls, data = _checked_contract(dumped)
    if not envelope.made_from_validated_payload():
        _payload_model(cls, data)
    return canonical_json(dumped)


def check_outgoing(envelope: Envelope) -> None:
    """Validate an event we are about to write (produce-side check, as :func:`encode_outgoing`)."""
    encode_outgoing(envelope)
