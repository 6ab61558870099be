"""A service's own long-lived parts (a ticker, a worker pool, a cache, a signer), held by type on its runtime.

A part is added once, usually in the service's ``on_start`` hook, and looked up by its class wherever it is needed:
``runtime.parts.get(Ticker)`` returns a ``Ticker`` as far as mypy is concerned, so a misspelt or mistyped part is a
type error, not a ``KeyError`` or an ``Any`` at run time. One part per class; a service that needs two of a kind
wraps them in a small class of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")


class Parts:
    """Service parts keyed by their class."""

    def __init__(self) -> None:
        self._parts: dict[type[Any], object] = {}

    def add(self, part: T) -> T:
        """Hold ``part`` under its class; a second part of the same class is a bug (ValueError)."""
        kind = type(part)
        if kind in self._parts:
            raise ValueError(f"the runtime already holds a {kind.__qualname__}")
        self._parts[kind] = part
        return part

    def get(self, kind: type[T]) -> T:
        """The part of class ``kind``; LookupError when none was added (a hook that did not run)."""
        part = self._parts.get(kind)
        if part is None:
            raise LookupError(f"the runtime holds no {kind.__qualname__} (added by the service's on_start?)")
        return cast(T, part)

    def find(self, kind: type[T]) -> T | None:
        """The part of class ``kind``, or None."""
        return cast(T | None, self._parts.get(kind))

    def get_or_add(self, kind: type[T], make: Callable[[], T]) -> T:
        """The part of class ``kind``, made by ``make`` on first use (for parts built lazily)."""
        part = self.find(kind)
        return part if part is not None else self.add(make())
