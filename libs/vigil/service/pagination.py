"""Keyset pagination shared by every list route: ``?limit=&after=`` in, ``{items, next}`` out."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from vigil.service.bounds import Cursor

T = TypeVar("T")

MAX_PAGE = 500


class Page(BaseModel, Generic[T]):
    """A page of items; ``next`` is the cursor for the following page (None at the end)."""

    items: list[T]
    next: str | None = None


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size")]
After = Annotated[Cursor | None, Query(description="cursor from the previous page's `next`")]
