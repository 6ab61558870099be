"""Version evolution: an old event is validated against its own schema, upcast, and built as the current class."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from pydantic import Field

from vigil.events import ContractError, decode_event, make_event, topics, upcast
from vigil.events.contracts import schemas_dir
from vigil.events.envelope import dataschema_uri
from vigil.events.payload import PAYLOAD_CLASSES, EventPayload
from vigil.events.upcast import register_upcaster, unregister_upcaster

pytestmark = pytest.mark.unit

TYPE = "test.widget"


class WidgetV2(EventPayload):
    """v2 measures in millimetres (v1 had ``size_cm``)."""

    TYPE: ClassVar[str] = TYPE
    VERSION: ClassVar[int] = 2
    TOPIC: ClassVar[str] = topics.DATA
    KEY_FIELD: ClassVar[str] = "name"

    name: str = Field(min_length=1, max_length=64)
    size_mm: int = Field(ge=0)


def _schema(version: int, props: dict[str, Any]) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": dataschema_uri(TYPE, version),
        "type": "object",
        "additionalProperties": False,
        "required": list(props),
        "properties": props,
    }


@pytest.fixture
def widget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A throwaway type with v1 and v2 schemas, only v2 registered, and a v1→v2 upcaster."""
    shutil.copytree(schemas_dir() / "envelope", tmp_path / "envelope")
    for version, props in (
        (1, {"name": {"type": "string", "maxLength": 64}, "size_cm": {"type": "integer", "minimum": 0}}),
        (2, {"name": {"type": "string", "maxLength": 64}, "size_mm": {"type": "integer", "minimum": 0}}),
    ):
        (tmp_path / "events" / TYPE).mkdir(parents=True, exist_ok=True)
        (tmp_path / "events" / TYPE / f"v{version}.json").write_text(json.dumps(_schema(version, props)))
    monkeypatch.setenv("VIGIL_SCHEMAS_DIR", str(tmp_path))
    monkeypatch.setitem(PAYLOAD_CLASSES, (TYPE, 2), WidgetV2)

    @register_upcaster(TYPE, from_version=1)
    def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        size = data.pop("size_cm")  # mutating is safe: upcasters get a private copy
        return {**data, "size_mm": size * 10}

    yield
    unregister_upcaster(TYPE, 1)


def _raw(version: int, data: dict[str, Any]) -> dict[str, Any]:
    event = make_event(WidgetV2(name="w", size_mm=0), source="vigil://test", actor="test")
    raw: dict[str, Any] = orjson.loads(event.canonical_bytes())
    raw.update(dataschema=dataschema_uri(TYPE, version), data=data)
    return raw


def _reason(raw: dict[str, Any]) -> str:
    with pytest.raises(ContractError) as info:
        decode_event(orjson.dumps(raw))
    return info.value.reason


@pytest.mark.usefixtures("widget")
def test_current_version_needs_no_upcast() -> None:
    _, payload = decode_event(orjson.dumps(_raw(2, {"name": "w", "size_mm": 35})))
    assert payload == WidgetV2(name="w", size_mm=35)


@pytest.mark.usefixtures("widget")
def test_old_version_is_upcast_and_the_envelope_kept_as_written() -> None:
    raw = _raw(1, {"name": "w", "size_cm": 3})
    envelope, payload = decode_event(orjson.dumps(raw))
    assert payload == WidgetV2(name="w", size_mm=30)
    assert envelope.data == {"name": "w", "size_cm": 3}
    assert envelope.version == 1
    assert envelope.canonical_bytes() == orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)


@pytest.mark.usefixtures("widget")
def test_old_event_must_obey_its_own_schema() -> None:
    assert _reason(_raw(1, {"name": "w", "size_mm": 3})) == "schema_violation"


@pytest.mark.usefixtures("widget")
def test_upcaster_output_must_obey_the_new_schema() -> None:
    with pytest.raises(ValueError, match="already registered"):  # one upcaster per (type, from_version)
        register_upcaster(TYPE, 1)(lambda d: d)
    unregister_upcaster(TYPE, 1)
    register_upcaster(TYPE, 1)(lambda d: {**d, "size_mm": -1})
    assert _reason(_raw(1, {"name": "w", "size_cm": 3})) == "schema_violation"


@pytest.mark.usefixtures("widget")
def test_failing_upcaster_is_a_contract_error() -> None:
    unregister_upcaster(TYPE, 1)

    def boom(data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("size_cm")

    register_upcaster(TYPE, 1)(boom)
    assert _reason(_raw(1, {"name": "w", "size_cm": 3})) == "upcast_failed"


@pytest.mark.usefixtures("widget")
def test_version_without_class_or_upcaster_is_unknown() -> None:
    assert _reason(_raw(3, {"name": "w", "size_mm": 3})) == "unknown_version"
    assert _reason(_raw(0, {"name": "w"})) == "unknown_version"


def test_chain_stops_when_broken() -> None:
    assert upcast.upcast("test.nothing", 1, {}, lambda v: v == 5) is None
    assert upcast.upcast("test.nothing", 5, {"a": 1}, lambda v: v == 5) == (5, {"a": 1})
