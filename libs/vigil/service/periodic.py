"""A background task that runs ``tick()`` every interval, or at once when woken — the shape of every service's
durable timer (the scheduler's ticker, the deployer's rollout timers): state lives in Postgres, the task only
looks at it. A failing tick is logged and retried at the next one; the task never dies silently."""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod

from vigil.bus.aio import BackgroundLoop, wait_event

log = logging.getLogger(__name__)


class PeriodicTask(BackgroundLoop):
    """Start in ``on_start``, stop in ``on_stop``; :meth:`wake` runs a tick early."""

    def __init__(self, name: str, interval_s: float) -> None:
        super().__init__(name)
        self.interval_s = interval_s
        self._wake = asyncio.Event()

    @abstractmethod
    async def tick(self) -> object:
        """One pass over the durable state."""

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s tick failed; the next tick retries", self.name)
            self._wake.clear()
            await wait_event(self._wake, self.interval_s)
