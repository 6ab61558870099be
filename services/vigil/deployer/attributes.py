"""Logged attributes: request fields a deployment declares, logged beside its predictions and never fed to the model.

Why: the monitor computes fairness gaps per group of a sensitive attribute (and drift of segment columns) from the
``categorical`` columns of ``prediction.logged``, and only the gateway may publish that event. A deployment
declares the request fields to log (``logged_attributes``, at most 16 identifiers); a client sends them in the same
rows (or columns) as the features. Only declared names are logged — a gateway must not copy arbitrary request fields
into a trail kept for years — and an undeclared extra field is refused as an unknown feature, as before.

Values are categories: a string (at most 256 characters, the event's bound) or null; a JSON integer is taken as
its decimal string (category codes such as a site number are often sent as numbers; ``12`` and ``"12"`` are then
the same group). Floats, booleans, lists and objects are refused (:class:`BadAttribute`, answered 422), since
their string form is ambiguous (``1`` vs ``1.0``) or they are not categories. A row without a declared attribute
logs null for it.

A declared name that is also a feature of the routed version is that version's feature: the model gets it (a
number), it is logged with the features (``numeric``), and it is not logged again as an attribute.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from vigil.deployer.gateway import InputError

#: Longest attribute value (characters): the bound of a category in ``prediction.logged``.
MAX_VALUE_CHARS = 256

#: Attribute name → one value per row of the request (null where a row did not send it).
Columns = dict[str, list[str | None]]

_PLAIN = frozenset({str, type(None)})


class BadAttribute(InputError):
    """An attribute value the gateway does not log (the client's to fix, whichever version is routed: a request
    refused for it is not counted against the routed version)."""


@functools.lru_cache(maxsize=256)
def logged_names(declared: tuple[str, ...], feature_names: tuple[str, ...]) -> tuple[str, ...]:
    """The declared attributes a version logs as attributes: those that are not its features."""
    features = set(feature_names)
    return tuple(name for name in declared if name not in features)


def from_rows(rows: Sequence[Mapping[str, object]], names: Sequence[str]) -> Columns:
    """The attribute columns of row-form input (one pass per attribute, none per row in Python code)."""
    return {name: _checked([row.get(name) for row in rows], name) for name in names}


def from_columns(columns: Mapping[str, Sequence[object]], names: Sequence[str], rows: int) -> Columns:
    """The attribute columns of column-major input; an attribute not sent is null for every row (the columns'
    lengths are checked with the features', by :func:`vigil.deployer.gateway.columns_to_matrix`)."""
    out: Columns = {}
    for name in names:
        column = columns.get(name)
        out[name] = [None] * rows if column is None else _checked(list(column), name)
    return out


def _checked(values: list[object], name: str) -> list[str | None]:
    """``values`` as logged categories; BadAttribute naming the first row that is not one."""
    if set(map(type, values)) <= _PLAIN and all(len(v) <= MAX_VALUE_CHARS for v in values if isinstance(v, str)):
        return values  # type: ignore[return-value]  # checked: str or None
    out: list[str | None] = []
    for i, value in enumerate(values):
        if type(value) is int:
            try:
                value = str(value)
            except ValueError:  # beyond the interpreter's digit limit: far longer than any category anyway
                raise BadAttribute(f"row {i}: attribute {name!r} is longer than {MAX_VALUE_CHARS} characters") from None
        if value is not None and not isinstance(value, str):
            raise BadAttribute(f"row {i}: attribute {name!r} must be a string or null, got {type(value).__name__}")
        if value is not None and len(value) > MAX_VALUE_CHARS:
            raise BadAttribute(f"row {i}: attribute {name!r} is longer than {MAX_VALUE_CHARS} characters")
        out.append(value)
    return out
