"""The catalogue is whole and the payload models equal the schema files (the files are the source of truth)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from event_schema_shape import SCHEMA_ROOT, load, schema_files, shape

from vigil.events import topics
from vigil.events.contracts import registered
from vigil.events.envelope import dataschema_uri
from vigil.events.payload import EventPayload

pytestmark = pytest.mark.unit

FILES = {(t, v): path for t, v, path in schema_files()}
CLASSES = registered()
PAIRS = sorted(CLASSES.items())
IDS = [f"{t}-v{v}" for (t, v), _ in PAIRS]


def test_every_schema_file_has_a_class_and_every_class_a_file() -> None:
    assert set(FILES) - set(CLASSES) == set(), "schema files without a payload class"
    assert set(CLASSES) - set(FILES) == set(), "payload classes without a schema file"
    assert len(CLASSES) >= 30


@pytest.mark.parametrize(("key", "cls"), PAIRS, ids=IDS)
def test_class_metadata(key: tuple[str, int], cls: type[EventPayload]) -> None:
    event_type, version = key
    assert event_type == cls.TYPE
    assert version == cls.VERSION
    assert cls.TOPIC in topics.ALL
    assert cls.TOPIC not in (topics.DLQ,), "dead letters are raw records, not an event type"
    assert cls.KEY_FIELD in cls.model_fields, f"{cls.__name__}.KEY_FIELD names no field"
    assert cls.model_config.get("frozen") is True
    assert cls.model_config.get("extra") == "forbid"
    assert cls.model_config.get("allow_inf_nan") is False


@pytest.mark.parametrize(("key", "cls"), PAIRS, ids=IDS)
def test_model_matches_schema_file(key: tuple[str, int], cls: type[EventPayload]) -> None:
    file_schema = load(FILES[key])
    model_schema = cls.model_json_schema()
    assert shape(model_schema, model_schema) == shape(file_schema, file_schema)


@pytest.mark.parametrize(("key", "path"), sorted(FILES.items()), ids=[f"{t}-v{v}" for t, v in sorted(FILES)])
def test_schema_file_header(key: tuple[str, int], path: Any) -> None:
    event_type, version = key
    schema = load(path)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == dataschema_uri(event_type, version)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert isinstance(schema["required"], list)
    assert schema["examples"], "every schema needs at least one example"
    assert schema.get("title")
    assert schema.get("description")


def _walk(node: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """Every sub-schema of a schema (not descending into examples)."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((where, node))
        for key, value in node.items():
            if key in ("examples", "enum", "const", "required"):
                continue
            found.extend(_walk(value, f"{where}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_walk(value, f"{where}/{i}"))
    return found


def _types(node: dict[str, Any]) -> set[str]:
    declared = node.get("type", [])
    return {declared} if isinstance(declared, str) else set(declared)


@pytest.mark.parametrize(("key", "path"), sorted(FILES.items()), ids=[f"{t}-v{v}" for t, v in sorted(FILES)])
def test_schema_bounds_every_string_array_and_map(key: tuple[str, int], path: Any) -> None:
    """Hostile input must be refusable: no unbounded string, list or open map anywhere; no defaults either
    (a validator that fills defaults in would change the bytes the audit hashes)."""
    for where, node in _walk(load(path), ""):
        assert "default" not in node, f"{where}: defaults are not allowed in schema files"
        types = _types(node)
        if "string" in types and "enum" not in node and "const" not in node:
            assert "maxLength" in node or "pattern" in node, f"{where}: unbounded string"
        if "array" in types:
            assert "maxItems" in node, f"{where}: unbounded array"
        if "object" in types and where != "":
            closed = node.get("additionalProperties", True) is False
            assert closed or "maxProperties" in node, f"{where}: open object without maxProperties"
        if "propertyNames" in node:
            names = node["propertyNames"]
            assert "maxLength" in names or "pattern" in names, f"{where}: unbounded property names"


def test_no_stray_files_in_schema_tree() -> None:
    stray = [p for p in SCHEMA_ROOT.rglob("*") if p.is_file() and not (p.suffix == ".json" and p.stem[1:].isdigit())]
    assert stray == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s["properties"]["reason"].update(maxLength=4096),
        lambda s: s["required"].remove("to_state"),
        lambda s: s["properties"].pop("reason"),
        lambda s: s["properties"]["attempt"].update(type="number"),
        lambda s: s["properties"]["to_state"]["enum"].append("paused"),
        lambda s: s["properties"]["from_state"].update(type="string"),
    ],
    ids=["constraint", "required", "property", "type", "enum", "nullability"],
)
def test_shape_comparison_notices_drift(mutate: Any) -> None:
    """The comparison above is only worth something if it fails on real differences."""
    cls = CLASSES[("job.state_changed", 1)]
    file_schema = load(FILES[("job.state_changed", 1)])
    mutate(file_schema)
    model_schema = cls.model_json_schema()
    assert shape(model_schema, model_schema) != shape(file_schema, file_schema)
