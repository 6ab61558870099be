"""How a pack's facts say where they come from: every leaf of ``sections`` is wrapped in one of two ways.

- ``{"$cite": event_id, "pointer": "/data/gates", "value": …}``: the value is what the audited event holds at that
  JSON pointer (RFC 6901); the pack carries the event, its entry and an inclusion proof, so the fact is checkable.
- ``{"$api": "registry GET /v1/…", "value": …}``: read from a service's API, not backed by an audit entry (yet).

A bare value anywhere in ``sections`` is neither, and the verifier refuses it: a pack cannot slip in an
unattributed figure. The renderer marks each fact with its origin.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

CITE = "$cite"
API = "$api"

_MISSING = object()


class PointerError(LookupError):
    """A JSON pointer that does not resolve in the document."""


def resolve(document: Any, pointer: str) -> Any:
    """The value at an RFC 6901 JSON pointer (``""`` is the whole document)."""
    if pointer == "":
        return document
    if not pointer.startswith("/"):
        raise PointerError(f"pointer {pointer!r} does not start with '/'")
    node = document
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise PointerError(f"pointer {pointer!r} does not resolve (at {token!r})")
    return node


def pointer_to(*parts: str | int) -> str:
    """A JSON pointer from path parts, escaped."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def cited(event_id: str, event: dict[str, Any], pointer: str) -> dict[str, Any]:
    """A fact taken from an audited event (the value is read from the event, never typed in; a copy, so the fact
    and the embedded event never share an object)."""
    return {CITE: event_id, "pointer": pointer, "value": copy.deepcopy(resolve(event, pointer))}


def from_api(source: str, value: Any) -> dict[str, Any]:
    """A fact read from a service's API, which no audit entry backs."""
    return {API: source, "value": value}


def is_cited(node: Any) -> bool:
    return isinstance(node, dict) and CITE in node


def is_api(node: Any) -> bool:
    return isinstance(node, dict) and API in node


def walk(node: Any, path: str = "sections") -> Iterator[tuple[str, Any]]:
    """Every wrapped fact and every bare leaf under ``node``, with its path (``sections.model.gates[2]``)."""
    if is_cited(node) or is_api(node):
        yield path, node
    elif isinstance(node, dict):
        for key, child in node.items():
            yield from walk(child, f"{path}.{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from walk(child, f"{path}[{index}]")
    else:
        yield path, node


def value(node: Any, default: Any = _MISSING) -> Any:
    """The value of a wrapped fact (the renderer's accessor); bare values pass through."""
    if is_cited(node) or is_api(node):
        return node["value"]
    if node is None and default is not _MISSING:
        return default
    return node
