"""Small process and socket helpers shared by the embedded broker, Postgres and the supervisor.

Children of the stack run in their own session, so a Ctrl-C in the terminal reaches only the supervisor, which then
stops them in order (services first, infrastructure last). On Linux they also get a parent-death signal, so a
supervisor killed with SIGKILL does not leave a broker or a Postgres behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil


class StackError(RuntimeError):
    """A piece of the embedded stack failed to start or to stop; the message says which and why."""


_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (the kernel picks it), never one this process handed out before.

    Why the memory: a stack picks all its ports first and binds them later, and the kernel may pick a port twice in
    a row while nothing holds it yet. Two pieces of one stack were given the same port in a fresh-clone CI run: a
    replica's front bound it first, the instance's readiness probe was answered by the front, and the instance
    itself, unable to bind, exited with code 3 minutes later.
    """
    for _ in range(64):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        with _HANDED_OUT_LOCK:
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port
    raise StackError(f"no free port on {host} that was not handed out already (64 tries)")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` and a server may bind it.

    The probe binds the way servers do, with ``SO_REUSEADDR`` (Postgres, the broker and uvicorn all set it): without
    it, connections the last server on the port closed first, still in TIME_WAIT for a minute, make a free port
    look busy — which moved a restarted stack's Postgres off 15432 with no listener on it (issue #25 item 5).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def tcp_connectable(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or a note that it does not exist."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(data.splitlines()[-lines:])


def _set_parent_death_signal(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to send ``sig`` to the child when its parent dies (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, sig, 0, 0, 0)

    return preexec


def spawn(
    argv: list[str],
    *,
    log_file: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: int | None = None,
    group: int | None = None,
    death_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session with stdout and stderr appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            user=user,
            group=group,
            extra_groups=[] if group is not None else None,
            preexec_fn=_set_parent_death_signal(death_signal),
        )


def stop_process(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 15.0, escalate: bool = True
) -> int | None:
    """Send ``sig``, wait up to ``timeout`` seconds, then SIGKILL (when ``escalate``). Returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            if not escalate:
                return None
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def stop_pid(pid: int, *, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Stop a process we did not start ourselves (a leftover from a crashed run): ``sig``, then SIGKILL."""
    try:
        proc = psutil.Process(pid)
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
            proc.wait(timeout=10)


def live_process(pid: int, *, cmdline_contains: str) -> psutil.Process | None:
    """The process ``pid`` if it is alive and its command line mentions ``cmdline_contains``; None otherwise.

    The second condition guards against pid reuse: a pid file left by a crashed run may name a process that has
    nothing to do with us.
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc if cmdline_contains in cmdline else None


def read_pid_file(path: Path) -> int | None:
    """The pid on the first line of ``path``, or None when the file is missing or unreadable."""
    try:
        first = path.read_text().splitlines()[0].strip()
        return int(first)
    except (FileNotFoundError, IndexError, ValueError):
        return None


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    abort: Callable[[], str | None] | None = None,
) -> None:
    """Poll ``predicate`` until true. ``abort`` returns a reason to give up early (e.g. the process died)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if abort is not None and (reason := abort()) is not None:
            raise StackError(f"{what}: {reason}")
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)
