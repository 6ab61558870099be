"""One LISTEN/NOTIFY wake-up loop for background workers that drain a table (outbox relay, audit entry publisher).

Writers ``NOTIFY`` a channel in the transaction that adds work (delivered at commit); the worker LISTENs on it over
a connection it holds for that alone, so work is picked up within a round trip instead of a poll interval. The
loop is easy to get subtly wrong, hence one implementation:

- **No lost wake-up.** The wake flag is cleared *before* each round of work, so a NOTIFY that arrives while the
  round runs triggers another round. After every (re)subscription a round runs at once: notifications sent while
  nobody listened are gone for good, the table is not.
- **Bounded wait.** Without any NOTIFY (a notification can still be lost, e.g. with the connection), the worker
  runs a round at least every ``poll_s``.
- **Payloads.** A worker whose NOTIFY carries the change itself (the deployer's serving state) passes ``on_payload``:
  it is called with each payload as it arrives and returns whether it applied it; a payload it could not apply
  wakes a round like a bare NOTIFY.
- **Reconnect.** The listening connection is watched (asyncpg's termination listener wakes the loop as soon as the
  connection drops, and it is checked before every round). Losing it, or any error in a round (Postgres
  restarting, broker away), releases it and retries after a backoff that doubles from ``backoff_s`` up to
  ``backoff_max_s``, then subscribes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from vigil.bus.aio import BackgroundLoop, wait_event

log = logging.getLogger(__name__)

#: One round of work; returns True when more is waiting right now (a full batch), so the next round starts at once.
Work = Callable[[], Awaitable[bool]]
#: Called with a NOTIFY's payload as it arrives; True when it applied it (no round needed).
PayloadHandler = Callable[[str], bool]


class NotifyWakeup(BackgroundLoop):
    """Runs ``work`` in a background task: on NOTIFY on ``channel``, every ``poll_s`` otherwise, at once on demand."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        channel: str,
        work: Work,
        *,
        name: str,
        poll_s: float,
        backoff_s: float | None = None,
        backoff_max_s: float = 5.0,
        logger: logging.Logger | None = None,
        error_message: str = "background worker error, retrying",
        log_extra: dict[str, Any] | None = None,
        on_payload: PayloadHandler | None = None,
    ) -> None:
        if not poll_s > 0:
            raise ValueError(f"poll_s must be positive (got {poll_s!r})")
        super().__init__(name)
        self.pool = pool
        self.channel = channel
        self.work = work
        self.poll_s = poll_s
        # The first retry waits backoff_s (the caller's poll interval by default), never more than backoff_max_s.
        self.backoff_max_s = backoff_max_s
        self.backoff_s = min(poll_s if backoff_s is None else backoff_s, backoff_max_s)
        self._log = logger or log
        self._error_message = error_message
        self._log_extra = log_extra or {}
        self._on_payload = on_payload
        self._wake = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        #: How many times the loop subscribed (the first time included): a test's and an operator's view of
        #: reconnections.
        self.subscriptions = 0

    @property
    def listening(self) -> bool:
        """Whether a live connection is LISTENing on the channel right now."""
        conn = self._conn
        if conn is None:
            return False
        try:
            return not conn.is_closed()
        except asyncpg.InterfaceError:
            # asyncpg detaches the pool proxy of a connection the server terminated: it reads as "released".
            return False

    async def stop(self) -> None:
        await super().stop()
        await self._unlisten()

    def wake(self) -> None:
        """Run a round now (a caller knows work was added, e.g. after marking rows for republishing)."""
        self._wake.set()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if self._on_payload is not None:
            try:
                if self._on_payload(payload):
                    return
            except Exception as exc:  # a payload it cannot read: the round reads the table instead
                self._log.warning("NOTIFY payload not applied", extra={"error": repr(exc), "channel": self.channel})
        self._wake.set()

    def _on_terminated(self, *_: Any) -> None:
        # The connection dropped: wake the loop so it subscribes again now, not after its poll interval.
        self._wake.set()

    async def _listen(self) -> None:
        if self.listening:
            return
        await self._unlisten()  # a dead connection goes back to the pool, which replaces it
        conn = await self.pool.acquire()
        try:
            await conn.add_listener(self.channel, self._on_notify)
            conn.add_termination_listener(self._on_terminated)
        except BaseException:
            await self.pool.release(conn)
            raise
        self._conn = conn
        self.subscriptions += 1

    async def _unlisten(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            conn.remove_termination_listener(self._on_terminated)
        with contextlib.suppress(Exception):
            await conn.remove_listener(self.channel, self._on_notify)
        with contextlib.suppress(Exception):
            await self.pool.release(conn)

    async def _run(self) -> None:
        backoff = self.backoff_s
        while True:
            try:
                await self._listen()
                self._wake.clear()  # before the round: a NOTIFY from now on wakes the next one
                more = await self.work()
                backoff = self.backoff_s
                if more:
                    continue
                await wait_event(self._wake, self.poll_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database or broker away: the rows stay; subscribe again after a backoff
                self._log.warning(
                    self._error_message, extra={"error": repr(exc), "channel": self.channel, **self._log_extra}
                )
                await self._unlisten()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)
