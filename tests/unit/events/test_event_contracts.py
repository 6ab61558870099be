"""Examples pass both the schema and the model and survive the wire; broken events fail with the right reason."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jsonschema
import orjson
import pytest
from event_schema_shape import load, schema_files

from vigil.events import ContractError, decode_event, make_event, payload_class
from vigil.events.contracts import MAX_EVENT_BYTES, check_outgoing, validate_envelope_dict
from vigil.events.envelope import Envelope, dataschema_uri

pytestmark = pytest.mark.unit

EXAMPLES = [
    (event_type, version, i, example)
    for event_type, version, path in schema_files()
    for i, example in enumerate(load(path)["examples"])
]
EXAMPLE_IDS = [f"{t}-v{v}-{i}" for t, v, i, _ in EXAMPLES]
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER


def _wire(envelope: Envelope) -> dict[str, Any]:
    raw: dict[str, Any] = orjson.loads(envelope.canonical_bytes())
    return raw


def _example_event(event_type: str = "data.updated") -> dict[str, Any]:
    path = next(p for t, _, p in schema_files() if t == event_type)
    cls = payload_class(event_type, 1)
    return _wire(make_event(cls.model_validate(load(path)["examples"][0]), source="vigil://test", actor="test"))


def _reason(raw: dict[str, Any] | bytes) -> str:
    data = raw if isinstance(raw, bytes) else orjson.dumps(raw)
    with pytest.raises(ContractError) as info:
        decode_event(data)
    return info.value.reason


@pytest.mark.parametrize(("event_type", "version", "index", "example"), EXAMPLES, ids=EXAMPLE_IDS)
def test_example_is_valid_and_round_trips(event_type: str, version: int, index: int, example: dict[str, Any]) -> None:
    path = next(p for t, v, p in schema_files() if (t, v) == (event_type, version))
    # An independent validator (jsonschema, draft 2020-12, formats checked) agrees with the one we run in production.
    jsonschema.Draft202012Validator(load(path), format_checker=FORMATS).validate(example)
    cls = payload_class(event_type, version)
    payload = cls.model_validate(example)
    assert payload.to_data() == cls.model_validate(payload.to_data()).to_data()

    event = make_event(payload, source="vigil://test", actor="svc:test")
    check_outgoing(event)
    wire = event.canonical_bytes()
    envelope, decoded = decode_event(wire)
    assert envelope == event
    assert decoded == payload
    assert type(decoded) is cls
    assert envelope.canonical_bytes() == wire
    assert envelope.subject == payload.subject()
    assert envelope.dataschema == dataschema_uri(event_type, version)
    assert payload.key()
    assert str(event.data[cls.KEY_FIELD]) == payload.key()  # the outbox keys records by this data field


def test_causal_links_follow_the_cause() -> None:
    root = Envelope.model_validate(_example_event("data.updated"))
    path = next(p for t, _, p in schema_files() if t == "dataset.version.registered")
    cls = payload_class("dataset.version.registered", 1)
    child = make_event(
        cls.model_validate(load(path)["examples"][0]), source="vigil://registry", actor="svc:registry", cause=root
    )
    assert child.causationid == root.id
    assert child.correlationid == root.correlationid == root.id
    assert child.id > root.id  # uuid7 strings sort by time


# --- negative cases -------------------------------------------------------------------------------------------------


def _set(path: list[str | int], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(event: dict[str, Any]) -> None:
        node: Any = event
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return apply


NEGATIVE: list[tuple[str, str, Callable[[dict[str, Any]], None], str]] = [
    ("wrong type", "data.updated", _set(["data", "row_count"], "many"), "schema_violation"),
    ("wrong nested type", "training.completed", _set(["data", "datasets", 0, "version"], "2"), "schema_violation"),
    ("extra property", "data.updated", _set(["data", "extra"], 1), "schema_violation"),
    ("extra nested property", "analysis.verdict", _set(["data", "window", "extra"], 1), "schema_violation"),
    ("extra envelope attribute", "data.updated", _set(["extra"], 1), "schema_violation"),
    ("missing required", "metric.observed", lambda e: e["data"].pop("value"), "schema_violation"),
    ("oversized string", "data.updated", _set(["data", "producer"], "x" * 257), "schema_violation"),
    (
        "oversized array",
        "label.observed",
        _set(["data", "labels"], [{"prediction_id": "p", "label": 1.0}] * 1001),
        "schema_violation",
    ),
    ("bad digest", "training.completed", _set(["data", "artifact_digest"], "md5:abc"), "schema_violation"),
    ("bad enum", "analysis.verdict", _set(["data", "verdict"], "Passed"), "schema_violation"),
    ("bad date-time", "metric.observed", _set(["data", "time"], "yesterday"), "schema_violation"),
    (
        "unknown type",
        "data.updated",
        lambda e: e.update(type="data.exploded", dataschema=dataschema_uri("data.exploded", 1)),
        "unknown_type",
    ),
    ("unknown version", "data.updated", _set(["dataschema"], dataschema_uri("data.updated", 9)), "unknown_version"),
    (
        "dataschema of another type",
        "data.updated",
        _set(["dataschema"], dataschema_uri("metric.observed", 1)),
        "dataschema_mismatch",
    ),
    ("ragged columns", "prediction.logged", _set(["data", "latency_ms"], [1.0]), "model_violation"),
    (
        "weights not summing to 100",
        "deployment.rollout.step",
        _set(["data", "weights", "stable"], 10),
        "model_violation",
    ),
    (
        "window ending before it starts",
        "drift.detected",
        _set(["data", "window", "end"], "2024-01-01T00:00:00Z"),
        "model_violation",
    ),
]


@pytest.mark.parametrize(("event_type", "mutate", "reason"), [n[1:] for n in NEGATIVE], ids=[n[0] for n in NEGATIVE])
def test_broken_events_are_refused_with_their_reason(
    event_type: str, mutate: Callable[[dict[str, Any]], None], reason: str
) -> None:
    event = _example_event(event_type)
    broken = copy.deepcopy(event)
    mutate(broken)
    assert _reason(broken) == reason
    with pytest.raises(ContractError) as info:
        validate_envelope_dict(broken)
    assert info.value.reason == reason
    decode_event(orjson.dumps(event))  # the unbroken original is fine


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_on_the_wire_are_malformed_json(token: bytes) -> None:
    raw = orjson.dumps(_example_event("metric.observed"))
    raw = raw.replace(b'"value":3.0', b'"value":' + token)
    assert token in raw
    assert _reason(raw) == "malformed_json"


def test_nan_in_a_parsed_event_is_refused_by_the_schema() -> None:
    """NaN is not a JSON number: the schema check refuses it before the model (which refuses it too) is built."""
    event = _example_event("metric.observed")
    event["data"]["value"] = float("nan")
    with pytest.raises(ContractError) as info:
        validate_envelope_dict(event)
    assert info.value.reason == "schema_violation"
    assert "value" in info.value.detail


def test_nan_cannot_be_constructed() -> None:
    """The encoder would write NaN as null, so the models must refuse it before it gets there."""
    cls = payload_class("metric.observed", 1)
    data = _example_event("metric.observed")["data"] | {"value": float("nan")}
    with pytest.raises(ValueError, match="finite"):
        cls.model_validate(data)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"{not json", "malformed_json"),
        (b"[1, 2]", "schema_violation"),
        (b"{}", "schema_violation"),
        (b" " * (MAX_EVENT_BYTES + 1), "too_large"),
    ],
    ids=["none", "malformed", "array", "empty-object", "too-large"],
)
def test_garbage_is_refused(raw: bytes | None, reason: str) -> None:
    with pytest.raises(ContractError) as info:
        decode_event(raw)
    assert info.value.reason == reason


def test_frozen_payloads_refuse_mutation() -> None:
    payload = payload_class("data.updated", 1).model_validate(_example_event()["data"])
    with pytest.raises(ValueError, match="frozen"):
        payload.row_count = 5  # type: ignore[misc]
