"""Run the web console (``python -m vigil.console``) beside a running stack, pointed at its services.

The console is no bus service (no database, broker or consumer group), so it is not one of the supervisor's
launches: ``vigil up`` and ``vigil demo`` start it once the six are ready and stop it before they stop. It gets
each service's address from the stack (the front of a service that runs replicas) through its
``VIGIL_CONSOLE_<SERVICE>_URL`` settings; its log is ``<home>/logs/console.log``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from vigil.stack._proc import StackError, free_port, port_is_free, spawn, stop_process, tail
from vigil.stack.services import CONSOLE, SERVICES
from vigil.stack.supervisor import RunningStack

_HOST = "127.0.0.1"


@dataclass(frozen=True)
class ConsoleProcess:
    url: str
    pid: int


def console_env(stack: RunningStack, port: int) -> dict[str, str]:
    """The console's environment: where it listens and where each of the stack's services answers."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["VIGIL_CONSOLE_HTTP_HOST"] = _HOST
    env["VIGIL_CONSOLE_HTTP_PORT"] = str(port)
    for spec in SERVICES:
        with contextlib.suppress(StackError):  # a stack started with --only lacks some: the default port stays
            env[f"VIGIL_CONSOLE_{spec.name.upper()}_URL"] = stack.url(spec.name)
    return env


def _pick(port: int | None, echo: Callable[[str], None]) -> int:
    if port is not None:
        return port or free_port(_HOST)
    if port_is_free(CONSOLE.port, _HOST):
        return CONSOLE.port
    chosen = free_port(_HOST)
    echo(f"console: port {CONSOLE.port} is busy (another process listens on it), using {chosen}")
    return chosen


@contextlib.contextmanager
def running_console(
    stack: RunningStack,
    *,
    port: int | None = None,
    ready_timeout: float = 60.0,
    echo: Callable[[str], None] = lambda _: None,
) -> Iterator[ConsoleProcess]:
    """Start the console for ``stack`` (port None: 8100 if free, else a free one; 0: a free one), wait until it
    answers ``/readyz``, yield its URL, stop it on exit."""
    chosen = _pick(port, echo)
    log_file = stack.paths.service_log(CONSOLE.name)
    proc = spawn([sys.executable, "-m", CONSOLE.module], log_file=log_file, env=console_env(stack, chosen))
    url = f"http://{_HOST}:{chosen}"
    try:
        deadline = time.monotonic() + ready_timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                if proc.poll() is not None:
                    raise StackError(
                        f"the console exited with code {proc.returncode}\n--- {log_file} ---\n{tail(log_file)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{url}/readyz").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise StackError(f"the console did not answer at {url} in {ready_timeout:.0f}s (log {log_file})")
                time.sleep(0.2)
        echo(f"  {'console':<10} ready at {url}")
        yield ConsoleProcess(url=url, pid=proc.pid)
    finally:
        stop_process(proc, sig=signal.SIGTERM, timeout=10.0)
