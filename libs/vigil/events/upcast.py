"""Upcasters: explicit functions that lift a payload of major version N to N+1.

Evolving a contract (see docs/events.md): a breaking change gets a new schema file ``v<N+1>.json`` and the payload
class moves to ``VERSION = N+1``; the old schema file stays (old events in logs and from old producers still follow
it) and one upcaster bridges the two::

    @register_upcaster("model.version.registered", from_version=1)
    def _mvr_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "stage": "none"}

On consume, an event whose (type, version) has no payload class is validated against its own schema, then lifted
through the chain of upcasters until a version with a class is reached, validated again against that version's
schema and built as that class. The envelope is left exactly as it was written — its bytes are what the audit
hashed — only the typed payload is upcast. Upcasters are pure: they get a private copy and return a new dict.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

MAX_CHAIN = 64  # a chain longer than this is a bug (or a cycle through a mis-registered version)

_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def register_upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Decorator: ``fn`` turns ``event_type`` v``from_version`` data into v``from_version + 1`` data."""

    def decorate(fn: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        existing = _UPCASTERS.get(key)
        if existing is not None and existing is not fn:
            raise ValueError(f"an upcaster for {event_type} v{from_version} is already registered")
        _UPCASTERS[key] = fn
        return fn

    return decorate


def unregister_upcaster(event_type: str, from_version: int) -> None:
    """Remove an upcaster (tests)."""
    _UPCASTERS.pop((event_type, from_version), None)


def has_upcaster(event_type: str, from_version: int) -> bool:
    """Whether ``event_type`` v``from_version`` can be lifted one version."""
    return (event_type, from_version) in _UPCASTERS


def upcast(
    event_type: str, version: int, data: dict[str, Any], is_target: Callable[[int], bool]
) -> tuple[int, dict[str, Any]] | None:
    """Lift ``data`` from ``version`` until ``is_target(version)``; None when the chain breaks before that.

    Exceptions raised by an upcaster propagate (the contract checker turns them into a ContractError).
    """
    current, value = version, copy.deepcopy(data)
    for _ in range(MAX_CHAIN):
        if is_target(current):
            return current, value
        fn = _UPCASTERS.get((event_type, current))
        if fn is None:
            return None
        value = fn(value)
        current += 1
    return None
