"""The contract checker's shortcuts accept and refuse exactly what the plain path does.

``vigil.events.contracts`` takes two shortcuts on the hot path (docs/events.md, "Validation cost"): schemas are
compiled with their ``#/$defs`` references inlined, and the produce side checks and encodes one dump of the
envelope. Each is only allowed because it is equivalent: every example of every schema file, and many broken
variants of each, get the same verdict from the inlined and the original schema, and the produce side's bytes are
exactly ``canonical_bytes``.
"""

from __future__ import annotations

import copy
from typing import Any

import fastjsonschema
import orjson
import pytest
from event_schema_shape import load, schema_files
from test_event_contracts import EXAMPLE_IDS, EXAMPLES, _example_event

from vigil.events import ContractError, make_event, payload_class
from vigil.events.contracts import (
    _load_schema,
    check_outgoing,
    encode_outgoing,
    inline_local_refs,
    schemas_dir,
)

pytestmark = pytest.mark.unit

SCHEMA_FILES = ["envelope/v1.json"] + [str(p.relative_to(schemas_dir())) for _t, _v, p in schema_files()]


def _verdict(validator: Any, value: Any) -> tuple[bool, str]:
    try:
        validator(copy.deepcopy(value))
    except fastjsonschema.JsonSchemaValueException as exc:
        return False, exc.message
    return True, ""


def _variants(example: dict[str, Any]) -> list[Any]:
    """The example plus, for every property at any depth, a copy with that value broken in a few ways."""
    out: list[Any] = [example]
    breakers = (None, "x" * 5000, -1, 1.5, [], {}, {"extra": 1}, True)

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
def test_inlined_refs_validate_like_the_original(relative: str) -> None:
    schema = copy.deepcopy(_load_schema(relative))  # fastjsonschema rewrites the refs of what it compiles
    inlined_schema = inline_local_refs(schema)
    assert "$ref" not in orjson.dumps({k: v for k, v in inlined_schema.items() if k != "$defs"}).decode()
    plain = fastjsonschema.compile(copy.deepcopy(schema))
    inlined = fastjsonschema.compile(inlined_schema)
    examples = schema.get("examples") or [_example_event()]
    for example in examples:
        for variant in _variants(example):
            ok_plain, _ = _verdict(plain, variant)
            ok_inlined, _ = _verdict(inlined, variant)
            assert ok_plain == ok_inlined, variant


def test_recursive_refs_are_left_alone() -> None:
    schema = {
        "type": "object",
        "properties": {"child": {"$ref": "#/$defs/node"}},
        "$defs": {"node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/node"}}}},
    }
    inlined = inline_local_refs(schema)
    assert inlined["properties"]["child"]["properties"]["child"] == {"$ref": "#/$defs/node"}
    validate = fastjsonschema.compile(inlined)
    validate({"child": {"child": {"child": {}}}})
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validate({"child": {"child": {"child": 1}}})


@pytest.mark.parametrize(("event_type", "version", "index", "example"), EXAMPLES, ids=EXAMPLE_IDS)
def test_encode_outgoing_is_check_plus_canonical_bytes(
    event_type: str, version: int, index: int, example: dict[str, Any]
) -> None:
    payload = payload_class(event_type, version).model_validate(example)
    event = make_event(payload, source="vigil://test", actor="svc:test")
    assert encode_outgoing(event) == event.canonical_bytes()
    check_outgoing(event)


def test_encode_outgoing_still_enforces_the_model_on_unvalidated_payloads() -> None:
    """``model_construct`` skips pydantic's checks (the deployer's batcher uses it): the produce check catches it."""
    cls = payload_class("prediction.logged", 1)
    example = load(next(p for t, _v, p in schema_files() if t == "prediction.logged"))["examples"][0]
    ragged = cls.model_construct(**{**cls.model_validate(example).__dict__, "latency_ms": [1.0] * 9})
    with pytest.raises(ContractError) as info:
        encode_outgoing(make_event(ragged, source="vigil://test", actor="svc:test"))
    assert info.value.reason == "model_violation"


def test_encode_outgoing_refuses_what_breaks_the_envelope_schema() -> None:
    event = make_event(
        payload_class("data.updated", 1).model_validate(_example_event()["data"]),
        source="vigil://test",
        actor="x" * 257,
    )
    with pytest.raises(ContractError) as info:
        encode_outgoing(event)
    assert info.value.reason == "schema_violation"
