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

The trainer process joins the cluster once per process (``ray.init(address=…)``): as a driver for a ``host:port``
address, or as a Ray client for a ``ray://host:port`` one (what compose and k8s configure). The Ray client cannot
consume a streaming generator, so there the run is a plain task (:func:`vigil.trainer.ray_task.run_on_node_relayed`)
that puts its chunks into a per-run channel actor the trainer drains every flush interval; the outcome and the files
are the task's return value. Everything else — cancellation, timeouts, lost workers — is the same on both paths.
``ray`` is an optional extra (``pip install vigil[ray]``, with Ray's client); it is imported only when a run asks for
this executor.
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
    "ActorDiedError",  # the run's channel (Ray client path) went with its worker process or node
    "ActorUnavailableError",
)

_DONE = object()
_log = logging.getLogger(__name__)
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


#: Tries of a Ray client connection whose server side failed to start (see :func:`connect`).
CLIENT_CONNECT_TRIES = 3


def connect(address: str) -> None:
    """Join the cluster once per process: as a driver for ``host:port`` (a loopback address stays loopback: see
    ``ray_node``), as a Ray client for ``ray://host:port``.

    A client connection is tried up to :data:`CLIENT_CONNECT_TRIES` times when the head's client server answers
    "Initialization failure from server" (``ConnectionAbortedError``): the server it starts for each client is
    forked from a process running gRPC threads and now and then dies during start-up (ray-project/ray#63202, open
    for Ray 2.60; seen here once in a handful of connections). A failed try is cleaned up (``ray.shutdown``) so
    that neither the next try nor a later driver connection finds Ray half-initialized."""
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
        tries = CLIENT_CONNECT_TRIES if is_client_address(address) else 1
        for attempt in range(1, tries + 1):
            try:
                ray.init(
                    address=address,
                    _node_ip_address="127.0.0.1" if loopback else None,
                    namespace="vigil-trainer",
                    log_to_driver=False,  # run logs come back through the task's chunks, into the run's log
                    logging_level=logging.WARNING,
                    configure_logging=False,
                )
                break
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    ray.shutdown()
                if attempt == tries or not isinstance(exc, ConnectionAbortedError):
                    raise
                _log.warning("ray client connection to %s failed (try %d of %d), trying again: %s",
                             address, attempt, tries, str(exc).splitlines()[0][:200])  # fmt: skip
                time.sleep(1.0)
        _connected_to = address


def disconnect() -> None:
    """Leave the cluster (tests; a trainer stays connected for its lifetime)."""
    global _connected_to
    with _connect_lock:
        if _connected_to is not None:
            import ray

            ray.shutdown()
            _connected_to = None


def is_client_address(address: str) -> bool:
    """``ray://host:port``: the trainer joins as a Ray client (through the head's client server), not a driver."""
    return address.startswith("ray://")


class _Streamed:
    """A run submitted by a driver: a streaming-generator task whose chunks come back as they are yielded."""

    def __init__(self, request: dict[str, Any], num_cpus: float) -> None:
        import ray

        from vigil.trainer.ray_task import run_on_node

        task = ray.remote(num_returns="streaming", max_retries=0, retry_exceptions=False, num_cpus=num_cpus)(
            run_on_node
        )
        self._generator = task.remote(request)

    def chunks(self, wait_s: float) -> list[Any]:
        """The chunks that arrived within ``wait_s`` (``_DONE`` last after the task's last one); raises Ray's error
        when the task failed."""
        chunk = _next_chunk(self._generator, wait_s)
        return [] if chunk is None else [chunk]

    def cancel(self, confirm_s: float) -> None:
        _cancel(self._generator, confirm_s)

    def release(self) -> None:
        """Nothing to release: the generator goes with its last chunk."""


class _Relayed:
    """A run submitted by a Ray client: a plain task that puts its chunks into a channel actor of this run (the
    client refuses streaming generators) and returns the last one."""

    def __init__(self, request: dict[str, Any], num_cpus: float) -> None:
        import ray

        from vigil.trainer.ray_task import RunChannel, run_on_node_relayed

        # No CPU: the channel holds chunks, it computes nothing, and must not wait for the CPU the run itself takes.
        self._channel: Any = ray.remote(num_cpus=0, max_restarts=0)(RunChannel).remote()
        task = ray.remote(max_retries=0, retry_exceptions=False, num_cpus=num_cpus)(run_on_node_relayed)
        self._result = task.remote(request, self._channel)
        self._take: Any = None  # the channel's pending ``take`` call
        self._take_after_end = False  # whether it was asked after the task had returned

    def chunks(self, wait_s: float) -> list[Any]:
        """What the channel holds, then — from a ``take`` asked once the task had returned, which it does only after
        its last put reached the channel — its last chunk and ``_DONE``; raises Ray's error when the task or the
        channel failed. Never blocks much past ``2 * wait_s``: a ``take`` not answered yet (the channel's worker
        process still starting) is kept for the next call instead of being waited for."""
        import ray

        ended = bool(ray.wait([self._result], timeout=wait_s)[0])
        if self._take is None:
            self._take, self._take_after_end = self._channel.take.remote(), ended
        if not ray.wait([self._take], timeout=wait_s)[0]:
            return []
        taken: list[Any] = list(ray.get(self._take))
        complete, self._take = self._take_after_end, None
        if complete:
            taken += [ray.get(self._result), _DONE]
        return taken

    def cancel(self, confirm_s: float) -> None:
        """Kill the task on its node and wait (bounded) until Ray reports it ended."""
        import ray

        with contextlib.suppress(Exception):
            ray.cancel(self._result, force=True)
        with contextlib.suppress(Exception):
            ray.wait([self._result], timeout=confirm_s)
        self.release()

    def release(self) -> None:
        """End what is left of the run: the task (when its channel failed under it; a no-op for an ended task) and
        the run's channel actor (whose worker process goes back to its node)."""
        import ray

        with contextlib.suppress(Exception):
            ray.cancel(self._result, force=True)
        with contextlib.suppress(Exception):
            ray.kill(self._channel)


def _submit(request: dict[str, Any], num_cpus: float, address: str) -> _Streamed | _Relayed:
    return (_Relayed if is_client_address(address) else _Streamed)(request, num_cpus)


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
        run = await asyncio.to_thread(_submit, request, options.num_cpus, options.address)
    except Exception as exc:  # the cluster is unreachable or refused the task: try again later
        return Outcome(False, "error", f"ray cluster {options.address}: {type(exc).__name__}: {exc}"[:1000], True,
                       None, None, time.monotonic() - started)  # fmt: skip
    deadline = started + timeout_s + options.grace_s
    try:
        while True:
            stopped = should_stop()
            if stopped:
                await asyncio.to_thread(run.cancel, 10.0)
                return Outcome(False, "cancelled", f"stopped: {stopped}", False, None, None,
                               time.monotonic() - started, stopped=stopped)  # fmt: skip
            if time.monotonic() > deadline:
                await asyncio.to_thread(run.cancel, 10.0)
                return Outcome(False, "timeout", f"exceeded the {timeout_s:g}s timeout on the Ray cluster; cancelled",
                               True, None, None, time.monotonic() - started)  # fmt: skip
            try:
                chunks = await asyncio.to_thread(run.chunks, flush_interval_s)
            except Exception as exc:
                await asyncio.to_thread(run.release)
                return _lost_or_error(exc, time.monotonic() - started)
            for chunk in chunks:
                if chunk is _DONE:
                    await asyncio.to_thread(run.release)
                    return Outcome(False, "worker_lost", "ray: the task ended without an outcome", True, None, None,
                                   time.monotonic() - started)  # fmt: skip
                outcome = await _deliver(chunk, on_metrics, on_logs)
                if outcome is not None:
                    await asyncio.to_thread(run.release)
                    return outcome
    except BaseException:  # the worker itself is stopping: nothing of the run outlives it
        await asyncio.shield(asyncio.to_thread(run.cancel, 5.0))
        raise


async def _deliver(chunk: Any, on_metrics: MetricSink, on_logs: LogSink) -> Outcome | None:
    """One chunk of the task to the sinks; the run's outcome once it came."""
    if "started" in chunk:  # the run's log says where it executes
        where = chunk["started"]
        await on_logs([("stderr", f"ray: executing on node {where.get('node_id')} "
                                  f"({where.get('host')}, Ray worker pid {where.get('pid')})")])  # fmt: skip
        return None
    if chunk.get("metrics"):
        await on_metrics(chunk["metrics"])
    if chunk.get("logs"):
        await on_logs([(str(stream), str(line)) for stream, line in chunk["logs"]])
    if "outcome" in chunk:
        return Outcome(**{**chunk["outcome"], "files": chunk.get("files") or {}})
    return None
