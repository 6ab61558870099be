"""A background task that runs ``tick()`` every interval, or at once when woken — the shape of every service's
durable timer (the scheduler's ticker, the deployer's rollout timers): state lives in Postgres, the task only
looks at it. A failing tick is logged and retried at the next one; the task never dies silently."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod

from vigil.bus.aio import cancel_and_wait, wait_event

log = logging.getLogger(__name__)


class PeriodicTask(ABC):
    """Start in ``on_start``, stop in ``on_stop``; :meth:`wake` runs a tick early."""

    def __init__(self, name: str, interval_s: float) -> None:
        self.name = name
        self.interval_s = interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def tick(self) -> object:
        """One pass over the durable state."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

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
