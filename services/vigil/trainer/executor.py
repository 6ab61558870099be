"""Runs one training attempt in a ``vigil.trainer.runner`` subprocess and turns what happens into an outcome.

The worker's event loop never blocks on training: the child runs in its own process group, its protocol stream
(metrics, then the result) and its log stream are read concurrently and handed to async sinks in small batches, and
the wait is a loop that also watches a stop signal (cancellation, lost lease). At the end of the run, whatever the
end, the whole process group is killed. This is the "executor interface" of the design: the Ray executor
(:mod:`vigil.trainer.ray_executor`) implements the same contract, and a Kubernetes-Job one would too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.trainer.confine import EXIT_CONFINE_FAILED
from vigil.trainer.sandbox import child_env

__all__ = ["LogSink", "MetricSink", "Outcome", "StopCheck", "child_env", "execute"]

READ_CHUNK = 65536

MetricSink = Callable[[list[dict[str, Any]]], Awaitable[None]]
LogSink = Callable[[list[tuple[str, str]]], Awaitable[None]]
StopCheck = Callable[[], str | None]


@dataclass
class Outcome:
    """How a run ended. ``result`` is the runner's ``result`` message when ``ok``."""

    ok: bool
    reason: str = ""  # training.failed reason when not ok
    error: str = ""
    retryable: bool = False
    result: dict[str, Any] | None = None
    exit_code: int | None = None
    duration_s: float = 0.0
    stopped: str | None = None  # why the worker stopped it (cancelled / superseded / lease lost)
    #: Output files by the result's relative path, when the run executed elsewhere (Ray) and its work directory
    #: is not on this host; None: read them from the local work directory.
    files: dict[str, bytes] | None = None


@dataclass
class _Streams:
    messages: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)


async def _lines(stream: asyncio.StreamReader, max_chars: int) -> AsyncIterator[str]:
    """Lines of a stream, each cut at ``max_chars`` (a line without newline never grows memory unboundedly)."""
    pending = b""
    while True:
        chunk = await stream.read(READ_CHUNK)
        if not chunk:
            if pending:
                yield pending.decode("utf-8", "replace")[:max_chars]
            return
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace")[:max_chars]
        if len(pending) > max_chars * 4:
            yield pending.decode("utf-8", "replace")[:max_chars]
            pending = b""


async def _read_protocol(stream: asyncio.StreamReader, out: _Streams, max_chars: int) -> None:
    async for line in _lines(stream, 1 << 20):
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            out.logs.append(("stdout", line[:max_chars]))
            continue
        if not isinstance(message, dict):
            continue
        if message.get("type") == "metric":
            out.metrics.append(message)
        elif message.get("type") in ("result", "failed"):
            out.messages.append(message)


async def _read_log(stream: asyncio.StreamReader, out: _Streams, max_chars: int) -> None:
    async for line in _lines(stream, max_chars):
        out.logs.append(("log", line))


def _write_spec(path: Path, spec: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def execute(
    spec: dict[str, Any],
    *,
    python: str,
    timeout_s: float,
    env: dict[str, str],
    on_metrics: MetricSink,
    on_logs: LogSink,
    should_stop: StopCheck,
    max_line_chars: int = 4096,
    flush_interval_s: float = 0.5,
) -> Outcome:
    """Run the spec in a runner subprocess; stream metrics and logs to the sinks; never raises for the run's faults."""
    workdir = Path(spec["workdir"])
    spec_path = workdir / "spec.json"
    await asyncio.to_thread(_write_spec, spec_path, {**spec, "parent_pid": os.getpid()})
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        python,
        "-m",
        # Confined runs start at the sandbox's stage 1, which then execs the runner (vigil.trainer.confine).
        "vigil.trainer.confine" if spec.get("sandbox") else "vigil.trainer.runner",
        str(spec_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(workdir),
        env=env,
        start_new_session=True,  # own process group: a timeout kills everything the run started
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    streams = _Streams()
    readers = [
        asyncio.create_task(_read_protocol(proc.stdout, streams, max_line_chars)),
        asyncio.create_task(_read_log(proc.stderr, streams, max_line_chars)),
    ]

    async def flush() -> None:
        metrics, streams.metrics = streams.metrics, []
        logs, streams.logs = streams.logs, []
        if metrics:
            await on_metrics(metrics)
        if logs:
            await on_logs(logs)

    timed_out = False
    stopped: str | None = None
    try:
        while True:
            remaining = timeout_s - (time.monotonic() - started)
            if remaining <= 0:
                timed_out = True
                break
            stopped = should_stop()
            if stopped:
                break
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation arriving as the process exits.
            try:
                async with asyncio.timeout(min(remaining, flush_interval_s)):
                    await asyncio.shield(proc.wait())
                break
            except TimeoutError:
                await flush()
        if timed_out or stopped:
            _kill_group(proc)
        await proc.wait()
        # Whatever the end — success too — nothing the run started outlives it (in the sandbox the pid namespace
        # goes with its init as well, which also catches children that left the group with setsid).
        _kill_group(proc)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*readers, return_exceptions=True)
        await flush()
    except BaseException:
        _kill_group(proc)
        for reader in readers:
            reader.cancel()
        raise
    finally:
        for reader in readers:
            reader.cancel()
    duration = time.monotonic() - started
    code = proc.returncode
    if timed_out:
        return Outcome(False, "timeout", f"exceeded the {timeout_s:g}s timeout; killed", True, None, code, duration)
    if stopped:
        return Outcome(False, "cancelled", f"stopped: {stopped}", False, None, code, duration, stopped=stopped)
    final = streams.messages[-1] if streams.messages else None
    if final is not None and final.get("type") == "result" and code == 0:
        return Outcome(True, result=final, exit_code=code, duration_s=duration)
    if final is not None and final.get("type") == "failed":
        reason = str(final.get("reason") or "error")
        if reason not in ("error", "memory", "invalid_input"):
            reason = "error"
        return Outcome(
            False, reason, str(final.get("error", ""))[:1000], reason != "invalid_input", None, code, duration
        )
    if code == EXIT_CONFINE_FAILED:
        return Outcome(False, "error", "sandbox: the run could not be confined (see its log); nothing of it ran",
                       False, None, code, duration)  # fmt: skip
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return Outcome(False, "error", f"runner killed by signal {name}", True, None, code, duration)
    return Outcome(False, "error", f"runner exited with code {code} without a result", True, None, code, duration)
