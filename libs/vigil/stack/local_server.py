"""What the embedded broker and Postgres have in common: one child process on ``127.0.0.1:<port>`` (or another local
address the caller names).

The port is chosen at first start (or before it, after a leftover process freed the usual one) and kept across
restarts; ``pid``/``running`` ask the child itself, never a pid file. Subclasses start and stop their process.
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

from vigil.stack._proc import StackError

HOST = "127.0.0.1"


class LocalServer(ABC):
    """A server process of ours on the loopback interface (see module docstring)."""

    #: How errors and reprs name it ("the broker", "Postgres").
    what: str = "the server"

    def __init__(self, port: int | None, host: str = HOST) -> None:
        self._port = port
        self._host = host
        self._proc: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def start(self) -> Self: ...

    @abstractmethod
    def stop(self, timeout: float = 10.0) -> None: ...

    # -- addresses -------------------------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        """The address it listens on: loopback, or one the caller chose (a veth address: tests/support/netns.py)."""
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise StackError(f"{self.what} has no port yet: start() it first")
        return self._port

    @port.setter
    def port(self, value: int) -> None:
        """Choose the port before :meth:`start` (e.g. after ``stop_leftover`` freed the usual one)."""
        if self.running:
            raise StackError(f"cannot move a running {self.what.removeprefix('the ')} to another port")
        self._port = value

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _died(self) -> str | None:
        """Why the process is gone, when it exited by itself."""
        if self._proc is not None and self._proc.poll() is not None:
            return f"{self.what} exited with code {self._proc.returncode}"
        return None
