"""Bounds at the API edge: every integer and string a route accepts fits the database column it reaches.

A value Postgres cannot hold (an integer beyond the column's range, a string with a NUL character) must be refused
where it enters, with FastAPI's 422 naming the parameter, not found out by asyncpg deep in a handler as a 500 — or,
on a streamed response, after the 200 headers went out. Each kind of value has one shared type here:

- :data:`Integer` for ``INTEGER`` columns (versions, attempts, log line numbers, limits in MB),
- :data:`BigInt` for ``BIGINT`` / ``BIGSERIAL`` columns (ids, audit sequence numbers, sizes),
- :data:`Cursor` for the string cursors of list routes (``?after=``), :data:`SafeText` for any other free text.

Combine them with ``Path``/``Query``/``Field`` for a route's own range (``Annotated[BigInt, Query(ge=0)]``); the
column's range stays, and shows up in the OpenAPI document as ``minimum``/``maximum``/``maxLength``.
"""

from __future__ import annotations

from typing import Annotated

from annotated_types import Ge, Le
from fastapi import Query
from pydantic import AfterValidator, StringConstraints

__all__ = [
    "BIGINT_MAX",
    "BIGINT_MIN",
    "CURSOR_MAX",
    "INT_MAX",
    "INT_MIN",
    "BigInt",
    "BigIntCursor",
    "Cursor",
    "Integer",
    "IntegerCursor",
    "SafeText",
    "refuse_nul",
]

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1
BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1
#: Longest string cursor a list route accepts (names, ids and digests are all shorter).
CURSOR_MAX = 256


def refuse_nul(value: str) -> str:
    """Postgres text cannot hold U+0000; refuse it here rather than fail in the driver."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000) characters")
    return value


#: An integer that fits a Postgres ``INTEGER`` column.
Integer = Annotated[int, Ge(INT_MIN), Le(INT_MAX)]
#: An integer that fits a Postgres ``BIGINT`` (or ``BIGSERIAL``) column.
BigInt = Annotated[int, Ge(BIGINT_MIN), Le(BIGINT_MAX)]
#: Free text bound for a text column: no NUL characters. Give it a length with ``Query``/``Field(max_length=…)``.
SafeText = Annotated[str, AfterValidator(refuse_nul)]
#: A list route's string cursor (the previous page's ``next``): bounded length, no NUL characters.
Cursor = Annotated[str, StringConstraints(max_length=CURSOR_MAX), AfterValidator(refuse_nul)]

#: ``?after=`` of list routes keyed by an ``INTEGER`` column (versions, line numbers).
IntegerCursor = Annotated[Integer, Query(ge=0, description="cursor: the last key of the previous page")]
#: ``?after=`` of list routes keyed by a ``BIGINT`` column (ids, sequence numbers).
BigIntCursor = Annotated[BigInt, Query(ge=0, description="cursor: the last key of the previous page")]
