"""The Ray executor: hands a run to a Ray cluster, with the local executor's contract.

:func:`execute_on_ray` is to a Ray cluster what :func:`vigil.trainer.executor.execute` is to the trainer's host: it
takes the same run spec and sinks and returns the same :class:`~vigil.trainer.executor.Outcome`, never raising for
the run's faults. The run itself executes on a worker node as a streaming-generator task
(:func:`vigil.trainer.ray_task.run_on_node`), confined there by the same sandbox and runner.

- **Datasets**: the worker has verified every dataset against its digest while staging it (a mismatch fails the
  run before anything is submitted); the verified bytes travel with the task and the runner on the node hashes them
  again before training.
- **Metrics and logs** come back as the task's yielded chunks and go to the sinks as they arrive.
- **Timeout**: the node kills the runner at ``timeout_s`` like a local run; the trainer also cancels the task at
  ``timeout_s`` + ``grace_s`` (a task still queued for lack of a free CPU, a node that stopped answering).
- **Cancellation / lost lease**: ``ray.cancel(force=True)`` kills the task's worker process; the runner dies with
  it (``PR_SET_PDEATHSIG``, and the sandbox's pid namespace with its init).
- **A lost worker or node** (``WorkerCrashedError``, ``NodeDiedError``, …) is a retryable ``worker_lost``: the
  task has ``max_retries=0``, so Ray never re-runs it behind Vigil's back; the scheduler's next attempt does, once.
- **Artifacts**: the model and the profile come back as bytes (``Outcome.files``); the worker checks them and puts
  them into the content-addressed store itself, so nodes need no access to the store or its keys.

The trainer process is a Ray driver (``ray.init(address=…)``, once per process). ``ray`` is an optional extra
(``pip install vigil[ray]``); it is imported only when a run asks for this executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.trainer.executor import LogSink, MetricSink, Outcome, StopCheck

__all__ = ["RayOptions", "connect", "disconnect", "execute_on_ray"]

#: Ray's errors that mean the task's worker process or node went away (not the run's own fault): retryable.
_LOST = (
    "WorkerCrashedError",
    "NodeDiedError",
    "LocalRayletDiedError",
    "ObjectLostError",
    "OwnerDiedError",
    "ObjectFetchTimedOutError",
    "ReferenceCountingAssertionError",
    "ObjectReconstructionFailedError",
    "ObjectReconstructionFailedMaxAttemptsExceededError",
    "ObjectReconstructionFailedLineageEvictedError",
    "RaySystemError",
    "TaskCancelledError",  # not cancelled by us (we return before reading it): someone killed the task
)

_DONE = object()
_connect_lock = threading.Lock()
_connected_to: str | None = None


@dataclass(frozen=True)
class RayOptions:
    """Where the cluster is and how nodes confine runs (the trainer's settings, see ``TrainerSettings``)."""

    address: str
    threads: int
    num_cpus: float
    grace_s: float
    sandbox: dict[str, Any]  # enabled, user, max_processes, max_file_mb, memory_cap_mb, work_dir (node-side)


def connect(address: str) -> None:
    """Join the cluster as a driver, once per process (a loopback address stays loopback: see ``ray_node``)."""
    global _connected_to
    with _connect_lock:
        import ray

        if _connected_to is not None and ray.is_initialized():
            if _connected_to != address:
                raise RuntimeError(f"this process is already connected to the Ray cluster at {_connected_to}")
            return
        loopback = address.startswith(("127.0.0.1:", "localhost:"))
        if loopback:
            from vigil.trainer.ray_node import keep_loopback

            keep_loopback()
        ray.init(
            address=address,
            _node_ip_address="127.0.0.1" if loopback else None,
            namespace="vigil-trainer",
            log_to_driver=False,  # run logs come back through the task's chunks, into the run's log
            logging_level=logging.WARNING,
            configure_logging=False,
        )
        _connected_to = address


def disconnect() -> None:
    """Leave the cluster (tests; a trainer stays connected for its lifetime)."""
    global _connected_to
    with _connect_lock:
        if _connected_to is not None:
            import ray

            ray.shutdown()
            _connected_to = None


def _submit(request: dict[str, Any], num_cpus: float) -> Any:
    import ray

    from vigil.trainer.ray_task import run_on_node

    task = ray.remote(num_returns="streaming", max_retries=0, retry_exceptions=False, num_cpus=num_cpus)(run_on_node)
    return task.remote(request)


def _next_chunk(generator: Any, wait_s: float) -> Any:
    """The task's next chunk, None when none arrived within ``wait_s``, ``_DONE`` after the last; raises Ray's
    error when the task failed."""
    import ray

    ready, _ = ray.wait([generator], timeout=wait_s)
    if not ready:
        return None
    try:
        ref = next(generator)
    except StopIteration:
        return _DONE
    return ray.get(ref)


def _cancel(generator: Any, confirm_s: float = 10.0) -> None:
    """Kill the task on its node and wait (bounded) until Ray reports it ended."""
    import ray

    with contextlib.suppress(Exception):
        ray.cancel(generator, force=True)
    deadline = time.monotonic() + confirm_s
    with contextlib.suppress(Exception):
        while time.monotonic() < deadline:
            if _next_chunk(generator, 0.5) is _DONE:
                return


def _read_staged(spec: dict[str, Any]) -> dict[str, bytes]:
    return {index: Path(path).read_bytes() for index, path in (spec.get("staged_datasets") or {}).items()}


def _lost_or_error(exc: BaseException, duration: float) -> Outcome:
    name = type(exc).__name__
    message = f"{name}: {exc}"[:1000]
    if name in _LOST or any(cls.__name__ in _LOST for cls in type(exc).__mro__):
        return Outcome(False, "worker_lost", f"ray: {message}", True, None, None, duration)
    return Outcome(False, "error", f"ray task failed: {message}", True, None, None, duration)


async def execute_on_ray(
    spec: dict[str, Any],
    *,
    options: RayOptions,
    timeout_s: float,
    on_metrics: MetricSink,
    on_logs: LogSink,
    should_stop: StopCheck,
    max_line_chars: int = 4096,
    flush_interval_s: float = 0.5,
) -> Outcome:
    """Run the spec as a Ray task; stream its metrics and logs to the sinks; never raises for the run's faults."""
    started = time.monotonic()
    try:
        await asyncio.to_thread(connect, options.address)
        datasets = await asyncio.to_thread(_read_staged, spec)
        request = {
            "spec": spec,
            "datasets": datasets,
            "sandbox": options.sandbox,
            "threads": options.threads,
            "timeout_s": timeout_s,
            "max_line_chars": max_line_chars,
            "flush_interval_s": flush_interval_s,
        }
        generator = await asyncio.to_thread(_submit, request, options.num_cpus)
    except Exception as exc:  # the cluster is unreachable or refused the task: try again later
        return Outcome(False, "error", f"ray cluster {options.address}: {type(exc).__name__}: {exc}"[:1000], True,
                       None, None, time.monotonic() - started)  # fmt: skip
    deadline = started + timeout_s + options.grace_s
    try:
        while True:
            stopped = should_stop()
            if stopped:
                await asyncio.to_thread(_cancel, generator)
                return Outcome(False, "cancelled", f"stopped: {stopped}", False, None, None,
                               time.monotonic() - started, stopped=stopped)  # fmt: skip
            if time.monotonic() > deadline:
                await asyncio.to_thread(_cancel, generator)
                return Outcome(False, "timeout", f"exceeded the {timeout_s:g}s timeout on the Ray cluster; cancelled",
                               True, None, None, time.monotonic() - started)  # fmt: skip
            try:
                chunk = await asyncio.to_thread(_next_chunk, generator, flush_interval_s)
            except Exception as exc:
                return _lost_or_error(exc, time.monotonic() - started)
            if chunk is None or "started" in chunk:
                continue
            if chunk is _DONE:
                return Outcome(False, "worker_lost", "ray: the task ended without an outcome", True, None, None,
                               time.monotonic() - started)  # fmt: skip
            if chunk.get("metrics"):
                await on_metrics(chunk["metrics"])
            if chunk.get("logs"):
                await on_logs([(str(stream), str(line)) for stream, line in chunk["logs"]])
            if "outcome" in chunk:
                return Outcome(**{**chunk["outcome"], "files": chunk.get("files") or {}})
    except BaseException:  # the worker itself is stopping: nothing of the run outlives it
        await asyncio.shield(asyncio.to_thread(_cancel, generator, 5.0))
        raise
