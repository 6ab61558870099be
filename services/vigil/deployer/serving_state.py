"""What the gateway serves, held in memory: deployment → stable and candidate versions (and digests), weight, mirror.

Why: reading it from Postgres on every request was one query per prediction (docs/deployer.md, serving state).
Why it still holds from the next request on: every write of a deployment's serving state (``store.set_serving``,
``store.insert_deployment``) NOTIFYs the new route itself in the same transaction, delivered at commit to every
gateway, which applies it in the listener callback — no query. Each route carries ``serving_seq`` (bumped under the
row lock), and an entry is only replaced by one with a higher or equal seq, so a reload that read an older snapshot
never undoes a newer change. Fallbacks: the whole table is reloaded after every (re)subscription and every
``serving_refresh_interval_ms`` (a lost notification is stale for at most that long), and a deployment this gateway
does not know yet is read from Postgres on its first request.
"""

from __future__ import annotations

import logging
import time

import asyncpg
import orjson

from vigil.bus.wakeup import NotifyWakeup
from vigil.deployer import store
from vigil.deployer.store import Route

log = logging.getLogger(__name__)


class ServingState:
    """The routes of every deployment, kept current by LISTEN/NOTIFY (a runtime part, started in ``on_start``)."""

    def __init__(self, pool: asyncpg.Pool, schema: str, *, refresh_interval_s: float) -> None:
        self.pool = pool
        self._routes: dict[str, Route] = {}
        #: name → ``time.perf_counter()`` when its current route was applied (tests measure the staleness with it).
        self.applied_at: dict[str, float] = {}
        self._wakeup = NotifyWakeup(
            pool,
            store.serving_channel(schema),
            self._reload,
            name="deployer-serving-state",
            poll_s=refresh_interval_s,
            logger=log,
            error_message="serving state refresh failed; serving the last known state, retrying",
            on_payload=self._on_payload,
        )

    async def start(self) -> None:
        """Load every route, then listen (the loop reloads once more right after it subscribes)."""
        await self._reload()
        await self._wakeup.start()

    async def stop(self) -> None:
        await self._wakeup.stop()

    @property
    def listening(self) -> bool:
        return self._wakeup.listening

    async def route(self, name: str) -> Route | None:
        """``name``'s route; one not known here yet (created a moment ago) is read from Postgres."""
        route = self._routes.get(name)
        if route is None:
            route = await self.refresh(name)
        return route

    async def refresh(self, name: str) -> Route | None:
        """Read ``name``'s committed route now (after a move this process committed: read-your-writes)."""
        async with self.pool.acquire() as conn:
            route = await store.get_route(conn, name)
        if route is not None:
            self._apply(route)
        return route

    def _apply(self, route: Route) -> None:
        current = self._routes.get(route.name)
        if current is None or route.seq >= current.seq:
            if current != route:
                self.applied_at[route.name] = time.perf_counter()
            self._routes[route.name] = route

    def _on_payload(self, payload: str) -> bool:
        self._apply(Route.of(orjson.loads(payload)))
        return True

    async def _reload(self) -> bool:
        async with self.pool.acquire() as conn:
            routes = await store.all_routes(conn)
        for route in routes:
            self._apply(route)
        return False
