"""Request dependencies every service's routes share: the running service and its pool, and its typed parts.

``async def route(runtime: RuntimeDep, ...)`` instead of reading ``request.app.state`` in each module; a service
declares one alias per part it serves from, e.g. ``TickerDep = Annotated[Ticker, Depends(part_of(Ticker))]``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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


def part_of(kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A dependency returning the runtime's part of class ``kind`` (see :class:`vigil.service.parts.Parts`)."""

    async def dependency(request: Request) -> T:
        return runtime_of(request).parts.get(kind)

    dependency.__name__ = f"{kind.__name__.lower()}_part"
    return dependency


# The dependencies are coroutines on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a thread
# hop per request for a dictionary lookup (it showed in the gateway's profile, docs/benchmarks/gateway.md).
async def _runtime(request: Request) -> ServiceRuntime:
    return runtime_of(request)


async def _pool(request: Request) -> asyncpg.Pool:
    return runtime_of(request).pool


RuntimeDep = Annotated[ServiceRuntime, Depends(_runtime)]
PoolDep = Annotated[asyncpg.Pool, Depends(_pool)]
