"""Small asyncio helpers: stopping aiokafka clients, waiting on an event without losing a cancellation, a background
loop's start and stop."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import Any

log = logging.getLogger(__name__)


async def stop_quietly(client: Any, timeout_s: float = 10.0) -> None:
    """Stop an aiokafka client whose broker may be gone, without letting its internals kill the caller.

    aiokafka's ``stop()`` awaits internal tasks that may have been cancelled when the connection broke; that
    surfaces as a CancelledError in *our* task. It is swallowed unless our own task is really being cancelled —
    otherwise a supervising loop (consumer, epoch watch) would die silently. Bounded by ``timeout_s``: leaving the
    group and the last commit are requests that can wait out the 30 s request timeout on a slow or lost broker,
    which held a whole service's shutdown past its budget (seen twice in the test suite under load).
    """
    try:
        async with asyncio.timeout(timeout_s):
            await client.stop()
    except TimeoutError:
        log.warning("aiokafka stop() did not finish in time; moving on", extra={"timeout_s": timeout_s})
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("aiokafka stop() raised CancelledError from its own tasks; ignored")
    except Exception as exc:
        log.debug("aiokafka stop() failed", extra={"error": repr(exc)})


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` passed; True if it was set.

    Not ``asyncio.wait_for(event.wait(), timeout_s)``: on Python 3.11, a cancellation that arrives just as the event
    is set is swallowed by ``wait_for`` (it returns the result instead), so a worker loop built on it survives its
    own ``stop()`` and the stop hangs forever — seen as a scheduler ticker, woken by the last API request before
    shutdown, holding the service's shutdown for good. ``asyncio.timeout`` keeps the cancellation.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


#: How long to wait for a cancelled task before cancelling it again.
RECANCEL_AFTER_S = 3.0


async def cancel_and_wait(task: asyncio.Task[Any], *, recancel_after_s: float = RECANCEL_AFTER_S) -> None:
    """Cancel a child ``task`` and wait until it has finished, without swallowing a cancellation of the caller.

    ``task.cancel(); with suppress(CancelledError): await task`` inside a worker loop also swallows the *worker's*
    own cancellation if it arrives during that await — the loop then outlives its ``stop()`` (seen: a trainer worker
    finishing a run as the service stopped). ``asyncio.wait`` never raises the child's outcome, only our own.

    The child may lose a cancellation too: aiokafka awaits some of its own child tasks under
    ``suppress(CancelledError)`` (``AIOKafkaClient.close()`` awaits its metadata task so; see also
    aio-libs/aiokafka#983), so a cancel that arrives while a loop is closing a client is swallowed and the loop runs
    on — a broker epoch watch (a client opened and closed every second) held a monitor's stop for 57 s. So a child
    still running ``recancel_after_s`` after a cancel is cancelled again (long enough for a cleanup in its
    ``finally`` to finish first), until it is done; the loops also check a stop flag.
    """
    cancels = 0
    while not task.done():
        task.cancel()
        cancels += 1
        await asyncio.wait({task}, timeout=recancel_after_s)
    if cancels > 1:
        log.warning("child task ignored a cancellation; cancelled %d times", cancels, extra={"task": task.get_name()})
    if not task.cancelled() and task.exception() is not None:
        log.warning(
            "child task failed while being cancelled", extra={"task": task.get_name(), "error": repr(task.exception())}
        )


class BackgroundLoop(ABC):
    """One named task running :meth:`_run` between :meth:`start` and :meth:`stop` — the shape of every loop a
    service owns (timers, LISTEN wake-ups); :meth:`stop` cancels it with :func:`cancel_and_wait`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def _run(self) -> None:
        """The loop itself; runs until cancelled."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
