"""One front address per service when the embedded stack runs several instances of it (``vigil up --replicas``).

A TCP round-robin proxy, in a thread of the supervisor: each accepted connection goes to the next live instance
(a refused connect tries the one after), and bytes are copied both ways until either side closes. Why TCP and
not HTTP: the services speak HTTP/1.1 with keep-alive, so a connection is the unit of balancing anyway, the
proxy needs no parser, and a streamed answer (the auditor's NDJSON export) passes through untouched. A client
whose instance dies sees its connection reset and reconnects — to a survivor. Why not a kept proxy (nginx,
HAProxy): the embedded stack runs without Docker or system packages, offline; this is ~100 lines of asyncio.

The well-known port of the service (8101…8106) belongs to the front, so the CLI, the demo and the console keep one
URL per service whatever the replica count; instances listen on free ports of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 2.0
_CHUNK = 64 * 1024

Backends = Callable[[], Sequence[int]]
"""Ports of the instances to balance over, asked at every connection (the supervisor restarts instances)."""


class FrontProxy:
    """Listen on ``host:port`` and spread connections over ``backends()`` in turn."""

    def __init__(self, name: str, host: str, port: int, backends: Backends) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.backends = backends
        self.connections = 0  # accepted so far, for status and tests
        self._turn = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Bind and serve in a daemon thread; returns once the port listens (or raises what stopped it)."""
        self._thread = threading.Thread(target=self._run, name=f"front-{self.name}", daemon=True)
        self._thread.start()
        self._ready.wait(10.0)
        if self._error is not None:
            raise self._error
        if self._server is None:
            raise RuntimeError(f"front of {self.name} did not start on {self.host}:{self.port}")

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10.0)
        self._loop = self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
            )
        except OSError as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection to the next instance that accepts one, starting at this connection's turn."""
        ports = list(self.backends())
        if not ports:
            return None
        start = next(self._turn)
        for i in range(len(ports)):
            port = ports[(start + i) % len(ports)]
            try:
                return await asyncio.wait_for(asyncio.open_connection(self.host, port), _CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError):
                continue
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        upstream = await self._connect()
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF or a reset, then half-close the other side (the peer may still be answering)."""
    try:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()
