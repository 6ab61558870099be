"""The contract checker's fast paths accept and refuse exactly what the reference does.

``vigil.events.contracts`` takes two shortcuts on the hot path (docs/events.md, "Validation cost"): schemas are
checked by jsonschema-rs (a Rust validator) and the produce side checks and encodes one dump of the envelope.
Each is only allowed because it is equivalent: every example of every schema file, and many broken variants of
each, get the same verdict from the production validator and from the reference validator (the pure-Python
``jsonschema``, draft 2020-12, formats asserted), and the produce side's bytes are exactly ``canonical_bytes``.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import orjson
import pytest
from event_schema_shape import load, schema_files
from test_event_contracts import EXAMPLE_IDS, EXAMPLES, _example_event

from vigil.bus.context import Delivery
from vigil.events import ContractError, Envelope, decode_event, make_event, payload_class, registered
from vigil.events.contracts import (
    _check,
    _load_schema,
    _whole_event_validator,
    check_outgoing,
    decode_event_deferred,
    encode_outgoing,
    model_adds_nothing,
    payload_schema_path,
    schemas_dir,
    validate_envelope_dict,
)
from vigil.events.envelope import utc_now_iso

pytestmark = pytest.mark.unit

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

SCHEMA_FILES = ["envelope/v1.json"] + [str(p.relative_to(schemas_dir())) for _t, _v, p in schema_files()]


def _reference_ok(relative: str, value: Any) -> bool:
    validator = jsonschema.Draft202012Validator(
        _load_schema(relative), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return bool(validator.is_valid(value))


def _production_ok(relative: str, value: Any) -> bool:
    try:
        _check(relative, copy.deepcopy(value), "value")
    except ContractError as exc:
        return exc.reason != "schema_violation"  # any other reason fails the comparison: it is no verdict
    return True


# RFC 3339 edge cases: the two validators must draw the date-time line in the same place. One place they differ
# is left out on purpose: a leap second (23:59:60), which RFC 3339 allows and jsonschema-rs accepts while the
# reference refuses it; the event is refused either way, by the model (see the leap-second test below).
DATE_TIMES = (
    "2026-12-02T01:02:03Z",
    "2026-12-02T01:02:03.123456+05:30",
    "2026-12-02t01:02:03z",
    "2026-12-02T01:02:03",
    "2026-12-02 01:02:03Z",
    "2026-02-30T01:02:03Z",
    "2026-12-02T24:00:00Z",
    "2026-12-02",
    "",
)


def _variants(example: dict[str, Any]) -> list[Any]:
    """The example plus, for every property at any depth, a copy with that value broken in a few ways."""
    out: list[Any] = [example]
    breakers = (None, "x" * 5000, -1, 1.5, [], {}, {"extra": 1}, True, *DATE_TIMES)

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            for broken in breakers:
                variant = copy.deepcopy(example)
                target = variant
                for part in path:
                    target = target[part]
                target[key] = broken
                out.append(variant)
            walk(value, (*path, key))

    walk(example, ())
    extra = copy.deepcopy(example)
    extra["not_a_property"] = 1
    out.append(extra)
    return out


@pytest.mark.parametrize("relative", SCHEMA_FILES)
def test_the_production_validator_agrees_with_the_reference(relative: str) -> None:
    schema = _load_schema(relative)
    examples = schema.get("examples") or [_example_event()]
    variants = [variant for example in examples for variant in _variants(example)]
    refused = 0
    for variant in variants:
        expected = _reference_ok(relative, variant)
        assert _production_ok(relative, variant) == expected, variant
        refused += not expected
    assert refused > 0, "the variants must include refused values, or the comparison proves nothing"


@pytest.mark.parametrize(("event_type", "version", "index", "example"), EXAMPLES, ids=EXAMPLE_IDS)
def test_the_whole_event_validator_accepts_what_both_checks_accept(
    event_type: str, version: int, index: int, example: dict[str, Any]
) -> None:
    """The fast path (one validator for envelope + payload) agrees with the envelope check and the payload check
    run one after the other, on every broken variant of a whole event, envelope fields and payload fields alike."""
    event = make_event(payload_class(event_type, version).model_validate(example), source="vigil://t", actor="t")
    whole = _whole_event_validator(event.type, event.dataschema)
    assert whole is not None and whole[0] is payload_class(event_type, version)
    refused = 0
    for variant in _variants(event.model_dump(mode="json")):
        both = _production_ok("envelope/v1.json", variant) and _production_ok(
            payload_schema_path(event_type, version), variant["data"]
        )
        assert whole[1].is_valid(variant) == both, variant
        refused += not both
    assert refused > 10


def test_the_whole_event_validator_is_only_for_current_registered_versions() -> None:
    uri = "https://vigil.dev/schemas/events/data.updated/v1.json"
    assert _whole_event_validator("data.updated", uri) is not None
    assert _whole_event_validator("data.updated", uri.replace("v1", "v9")) is None  # unknown version
    assert _whole_event_validator("data.updatedx", uri) is None  # dataschema of another type
    assert _whole_event_validator("no.such", "https://vigil.dev/schemas/events/no.such/v1.json") is None
    assert _whole_event_validator(None, uri) is None
    assert _whole_event_validator("data.updated", 1) is None


def test_an_envelope_from_a_checked_dict_is_the_validated_envelope() -> None:
    """``Envelope.from_checked`` (consume side) builds what ``model_validate`` builds, for all the schema accepts."""
    envelopes = [_example_event(t) for t in ("data.updated", "metric.observed", "prediction.logged")]
    optional_missing = copy.deepcopy(envelopes[0])
    for key in ("causationid", "traceparent"):
        optional_missing.pop(key, None)
    compared = 0
    for variant in [optional_missing] + [v for e in envelopes for v in _variants(e)]:
        if not _production_ok("envelope/v1.json", variant):
            continue
        try:
            expected = Envelope.model_validate(copy.deepcopy(variant))
        except ValueError:
            pytest.fail(f"the envelope schema accepted what the envelope model refuses: {variant}")
        built = Envelope.from_checked(copy.deepcopy(variant))
        assert built == expected
        assert built.model_dump(mode="json") == expected.model_dump(mode="json")
        assert built.wire_dict() == expected.wire_dict()
        assert built.model_fields_set == expected.model_fields_set
        compared += 1
    assert compared > 50


@pytest.mark.parametrize(("event_type", "version", "index", "example"), EXAMPLES, ids=EXAMPLE_IDS)
def test_make_event_builds_the_validated_envelope(
    event_type: str, version: int, index: int, example: dict[str, Any]
) -> None:
    """``make_event`` skips pydantic's pass (issue #9): what it builds is what validating its fields builds."""
    payload = payload_class(event_type, version).model_validate(example)
    assert payload.to_data() == payload.model_dump(mode="json")  # to_data asks the serializer directly
    root = make_event(payload, source="vigil://test", actor="svc:test", traceparent=TRACEPARENT)
    for event in (root, make_event(payload, source="vigil://t2", actor="svc:t2", cause=root, subject="s")):
        # what make_event used to pass to the validating constructor: every field but the two constants
        given = {k: v for k, v in event.__dict__.items() if k not in ("specversion", "datacontenttype")}
        expected = Envelope(**copy.deepcopy(given))
        assert event == expected
        assert event.model_dump(mode="json") == expected.model_dump(mode="json")
        assert event.model_fields_set == expected.model_fields_set
        assert list(event.__dict__) == list(expected.__dict__), "field order is the model's"
        check_outgoing(event)
    child = make_event(payload, source="vigil://t2", actor="svc:t2", cause=root)
    assert (child.correlationid, child.causationid, child.traceparent) == (root.id, root.id, TRACEPARENT)


@pytest.mark.parametrize(
    "bad",
    [{"source": 7}, {"actor": None}, {"subject": 3}, {"traceparent": b"00-x"}, {"event_id": 12}],
    ids=lambda b: next(iter(b)),
)
def test_make_event_refuses_arguments_that_are_not_strings(bad: dict[str, Any]) -> None:
    payload = payload_class("data.updated", 1).model_validate(_example_event()["data"])
    with pytest.raises(TypeError, match=next(iter(bad))):
        make_event(payload, **{"source": "vigil://test", "actor": "svc:test", **bad})


def test_event_times_are_rfc3339_utc_with_microseconds() -> None:
    """The cached-prefix clock gives what ``datetime.now(UTC)`` gives, always with six fractional digits."""
    before = datetime.now(UTC)
    stamps = [utc_now_iso() for _ in range(2000)]
    after = datetime.now(UTC)
    for stamp in stamps:
        assert len(stamp) == len("2026-12-02T05:03:11.123456Z") and stamp.endswith("Z")
        parsed = datetime.fromisoformat(stamp)
        assert before - timedelta(milliseconds=1) <= parsed <= after + timedelta(milliseconds=1)
    assert stamps == sorted(stamps), "fixed width: event times sort as strings"


DEFERRABLE = sorted(f"{t} v{v}" for (t, v), cls in registered().items() if model_adds_nothing(cls))
_DEFERRED = [i for i, (t, v, _i, _e) in enumerate(EXAMPLES) if model_adds_nothing(payload_class(t, v))]
DEFERRED_EXAMPLES = [EXAMPLES[i] for i in _DEFERRED]
DEFERRED_IDS = [EXAMPLE_IDS[i] for i in _DEFERRED]


def _data_updated_event() -> Envelope:
    payload = payload_class("data.updated", 1).model_validate(_example_event()["data"])
    return make_event(payload, source="vigil://test", actor="test")


def test_deferred_models_are_the_plain_json_ones() -> None:
    """The consumer defers the model only where it checks nothing beyond the schema; validators, datetimes and
    other non-JSON field types keep it eager (a sample of each, so a wrong rule shows)."""
    assert "data.updated v1" in DEFERRABLE and "deployment.promoted v1" in DEFERRABLE
    for eager in ("metric.observed v1", "prediction.logged v1", "audit.entry v1", "training.completed v1"):
        assert eager not in DEFERRABLE, eager


@pytest.mark.parametrize(("event_type", "version", "index", "example"), DEFERRED_EXAMPLES, ids=DEFERRED_IDS)
def test_a_deferred_model_accepts_everything_its_schema_accepts(
    event_type: str, version: int, index: int, example: dict[str, Any]
) -> None:
    """What makes deferring safe: for a class the consumer defers, no variant the schema lets through is refused
    by the model when a handler finally builds it."""
    cls = payload_class(event_type, version)
    accepted = 0
    for variant in _variants(example):
        if _production_ok(payload_schema_path(event_type, version), variant):
            try:
                cls.model_validate(copy.deepcopy(variant))
            except ValueError as exc:
                pytest.fail(f"the schema accepts what the deferred model refuses: {variant}: {exc}")
            accepted += 1
    assert accepted >= 1


def test_decode_event_deferred_leaves_only_deferrable_models_unbuilt() -> None:
    plain = make_event(
        payload_class("data.updated", 1).model_validate(_example_event()["data"]), source="s://t", actor="t"
    )
    envelope, cls, payload = decode_event_deferred(plain.canonical_bytes())
    assert payload is None and cls is payload_class("data.updated", 1)
    assert envelope == plain
    metric = _example_event("metric.observed")
    envelope, cls, payload = decode_event_deferred(orjson.dumps(metric))
    assert payload is not None and payload == decode_event(orjson.dumps(metric))[1]
    with pytest.raises(ContractError) as info:
        decode_event_deferred(orjson.dumps({**metric, "data": {**metric["data"], "value": "x"}}))
    assert info.value.reason == "schema_violation"


def test_a_deferred_delivery_builds_its_payload_once_on_first_read() -> None:
    event = make_event(
        payload_class("data.updated", 1).model_validate(_example_event()["data"]), source="s://t", actor="t"
    )
    envelope, cls, _ = decode_event_deferred(event.canonical_bytes())
    delivery = Delivery.deferred(envelope, cls, "vigil.data", 0, 7)
    assert delivery._payload is None
    first = delivery.payload
    assert first == cls.model_validate(event.data) and first.is_validated()
    assert delivery.payload is first
    eager = Delivery(envelope, first, "vigil.data", 0, 7)
    assert eager.payload is first and "data.updated" in repr(eager)


def test_schema_errors_say_where_and_stay_short() -> None:
    event = _example_event()
    event["data"]["producer"] = "x" * 100_000
    with pytest.raises(ContractError) as info:
        _check("envelope/v1.json", {**event, "source": 7}, "envelope")
    assert "at source" in info.value.detail
    with pytest.raises(ContractError) as info:
        _check("events/data.updated/v1.json", event["data"], "data")
    assert "at producer" in info.value.detail
    assert len(info.value.detail) < 400


def test_a_leap_second_passes_the_schema_and_is_refused_by_the_model() -> None:
    event = _example_event("metric.observed")
    event["data"]["time"] = "2016-12-31T23:59:60Z"
    _check("events/metric.observed/v1.json", event["data"], "data")
    with pytest.raises(ContractError) as info:
        validate_envelope_dict(event)
    assert info.value.reason == "model_violation"


def test_values_that_are_not_json_are_refused_not_raised() -> None:
    with pytest.raises(ContractError) as info:
        _check("envelope/v1.json", {"id": {1, 2}}, "envelope")
    assert info.value.reason == "schema_violation"


@pytest.mark.parametrize(("event_type", "version", "index", "example"), EXAMPLES, ids=EXAMPLE_IDS)
def test_encode_outgoing_is_check_plus_canonical_bytes(
    event_type: str, version: int, index: int, example: dict[str, Any]
) -> None:
    payload = payload_class(event_type, version).model_validate(example)
    event = make_event(payload, source="vigil://test", actor="svc:test")
    assert encode_outgoing(event) == event.canonical_bytes()
    assert event.wire_dict() == event.model_dump(mode="json")
    check_outgoing(event)


def test_encode_outgoing_still_enforces_the_model_on_unvalidated_payloads() -> None:
    """``model_construct`` skips pydantic's checks (the deployer's batcher uses it): the produce check catches it."""
    cls = payload_class("prediction.logged", 1)
    example = load(next(p for t, _v, p in schema_files() if t == "prediction.logged"))["examples"][0]
    ragged = cls.model_construct(**{**cls.model_validate(example).__dict__, "latency_ms": [1.0] * 9})
    with pytest.raises(ContractError) as info:
        encode_outgoing(make_event(ragged, source="vigil://test", actor="svc:test"))
    assert info.value.reason == "model_violation"


def test_only_envelopes_of_validated_payloads_skip_the_model() -> None:
    """The produce check skips the payload model only for what :func:`make_event` wrapped around a checked model."""
    cls = payload_class("prediction.logged", 1)
    example = load(next(p for t, _v, p in schema_files() if t == "prediction.logged"))["examples"][0]
    checked = cls.model_validate(example)
    assert checked.is_validated()
    assert make_event(checked, source="vigil://test", actor="svc:test").made_from_validated_payload()
    constructed = cls.model_construct(**checked.__dict__)
    assert not constructed.is_validated()
    assert constructed == checked, "the mark must not change equality"
    updated = checked.model_copy(update={"latency_ms": [1.0] * 9})  # pydantic does not validate an update
    assert not updated.is_validated()
    assert not updated.model_copy().is_validated(), "a copy of an unvalidated payload is unvalidated"
    assert checked.model_copy().is_validated()
    with pytest.raises(ContractError) as info:
        encode_outgoing(make_event(updated, source="vigil://test", actor="svc:test"))
    assert info.value.reason == "model_violation"
    envelope = make_event(checked, source="vigil://test", actor="svc:test")
    assert not envelope.model_copy(update={"time": envelope.time}).made_from_validated_payload()
    decoded, _ = validate_envelope_dict(envelope.wire_dict())
    assert not decoded.made_from_validated_payload()


def test_encode_outgoing_refuses_what_breaks_the_envelope_schema() -> None:
    event = make_event(
        payload_class("data.updated", 1).model_validate(_example_event()["data"]),
        source="vigil://test",
        actor="x" * 257,
    )
    with pytest.raises(ContractError) as info:
        encode_outgoing(event)
    assert info.value.reason == "schema_violation"
