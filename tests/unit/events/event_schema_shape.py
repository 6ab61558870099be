"""Reduce a JSON Schema to the shape that matters for "the model and the schema file say the same thing".

Pydantic and a hand-written schema spell the same contract differently (``anyOf [X, null]`` vs ``type: [X, "null"]``,
``$ref`` into ``$defs`` with different names, ``patternProperties`` vs ``propertyNames``), so both are normalised to
one form: per JSON type, the keywords that constrain that type, with ``$ref`` resolved and nested schemas normalised
recursively. Titles, descriptions, examples and defaults are ignored. ``integer`` is folded into ``number`` when both
are allowed. ``maxLength`` is ignored on ``format: date-time`` strings: the files bound them (64), pydantic cannot
express a length on a datetime, and its parser refuses anything that is not a timestamp anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vigil.events.codec import parse_json
from vigil.events.contracts import schemas_dir

STRING = ("pattern", "minLength", "maxLength", "format")
NUMBER = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
ARRAY = ("minItems", "maxItems", "items")
OBJECT = (
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
)
JSON_TYPES = ("string", "number", "integer", "boolean", "null", "array", "object")

SCHEMA_ROOT = schemas_dir() / "events"


def schema_files() -> list[tuple[str, int, Path]]:
    """(type, major version, path) of every payload schema file."""
    return [(p.parent.name, int(p.stem[1:]), p) for p in sorted(SCHEMA_ROOT.glob("*/v*.json"))]


def load(path: Path) -> dict[str, Any]:
    """Parse a schema file (strict JSON)."""
    loaded: dict[str, Any] = parse_json(path.read_bytes())
    return loaded


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"only local refs are allowed, got {ref}"
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
        seen += 1
        assert seen < 32, "ref cycle"
    return node


def shape(node: Any, root: dict[str, Any]) -> dict[str, Any]:
    """Normalised shape: ``{json type: {keyword: value}}``; ``{"any": {}}`` for an unconstrained schema."""
    if node is True or node == {}:
        return {"any": {}}
    assert isinstance(node, dict), node
    node = _resolve(root, node)
    out: dict[str, dict[str, Any]] = {}
    for key in ("anyOf", "oneOf"):
        for branch in node.get(key, []):
            _merge(out, shape(branch, root))
    own = _own_shape(node, root)
    if own:
        _merge(out, own)
    if "number" in out and "integer" in out:
        integer = out.pop("integer")
        if "enum" in integer:
            out["number"].setdefault("enum", []).extend(integer["enum"])
    for facets in out.values():
        if "enum" in facets:
            facets["enum"] = sorted(facets["enum"], key=repr)
    return out or {"any": {}}


def _own_shape(node: dict[str, Any], root: dict[str, Any]) -> dict[str, dict[str, Any]]:
    declared = node.get("type")
    types = [declared] if isinstance(declared, str) else list(declared or [])
    enum = list(node["enum"]) if "enum" in node else ([node["const"]] if "const" in node else None)
    if enum is not None and not types:
        types = sorted({_json_type(v) for v in enum})
    if not types:
        if any(k in node for k in OBJECT):
            types = ["object"]
        elif any(k in node for k in ARRAY):
            types = ["array"]
        elif any(k in node for k in STRING):
            types = ["string"]
        else:
            return {}
    out: dict[str, dict[str, Any]] = {}
    for t in types:
        facets: dict[str, Any] = {}
        if t == "string":
            facets = {k: node[k] for k in STRING if k in node}
            if facets.get("format") == "date-time":
                facets.pop("maxLength", None)
        elif t in ("number", "integer"):
            facets = {k: node[k] for k in NUMBER if k in node}
        elif t == "array":
            facets = {k: node[k] for k in ("minItems", "maxItems") if k in node}
            facets["items"] = shape(node.get("items", True), root)
        elif t == "object":
            facets = _object_facets(node, root)
        if enum is not None and t != "null":  # null has one value: an enum adds nothing
            facets["enum"] = [v for v in enum if _json_type(v) == t or (t == "number" and _json_type(v) == "integer")]
        out[t] = facets
    return out


def _object_facets(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    facets: dict[str, Any] = {k: node[k] for k in ("minProperties", "maxProperties") if k in node}
    facets["properties"] = {name: shape(sub, root) for name, sub in node.get("properties", {}).items()}
    facets["required"] = sorted(node.get("required", []))
    names = dict(node.get("propertyNames", {}))
    additional = node.get("additionalProperties", True)
    pattern_props = node.get("patternProperties", {})
    if pattern_props:  # pydantic's spelling of dict[ConstrainedKey, V]
        assert len(pattern_props) == 1, pattern_props
        ((pattern, sub),) = pattern_props.items()
        names["pattern"] = pattern
        additional = sub
    facets["propertyNames"] = {k: names[k] for k in STRING if k in names}
    facets["additionalProperties"] = additional if isinstance(additional, bool) else shape(additional, root)
    return facets


def _merge(into: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]]) -> None:
    for t, facets in other.items():
        if t not in into:
            into[t] = dict(facets)
            continue
        current = into[t]
        for k, v in facets.items():
            if k == "enum":
                current.setdefault("enum", []).extend(v)
            elif k in current and current[k] != v:
                raise AssertionError(f"conflicting {k!r} for type {t}: {current[k]!r} vs {v!r}")
            else:
                current[k] = v
