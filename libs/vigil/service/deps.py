"""Request dependencies every service's routes share: the running service and its pool, and its typed parts.

``async def route(runtime: RuntimeDep, ...)`` instead of reading ``request.app.state`` in each module; a service
declares one alias per part it serves from, e.g. ``TickerDep = Annotated[Ticker, Depends(part_of(Ticker))]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import asyncpg
from fastapi import Depends, Request

from vigil.service.runtime import ServiceRuntime

T = TypeVar("T")


def runtime_of(request: Request) -> ServiceRuntime:
    """The runtime the app's lifespan started (``create_app``)."""
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def pool_of(request: Request) -> asyncpg.Pool:
    """The service's database pool."""
    return runtime_of(request).pool


def part_of(kind: type[T]) -> Callable[[Request], T]:
    """A dependency returning the runtime's part of class ``kind`` (see :class:`vigil.service.parts.Parts`)."""

    def dependency(request: Request) -> T:
        return runtime_of(request).parts.get(kind)

    dependency.__name__ = f"{kind.__name__.lower()}_part"
    return dependency


RuntimeDep = Annotated[ServiceRuntime, Depends(runtime_of)]
PoolDep = Annotated[asyncpg.Pool, Depends(pool_of)]
