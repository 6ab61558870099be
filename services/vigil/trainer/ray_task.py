"""What a Ray worker node does with one training run: the local executor's contract, run there.

:func:`run_on_node` is the body of the Ray task the trainer submits (:mod:`vigil.trainer.ray_executor`). It runs
on whichever worker node Ray picks, as a streaming generator, and does there exactly what a trainer host does for a
local run: it confines the run with the same sandbox (:func:`vigil.trainer.sandbox.prepare` — own uid, network,
pid and mount namespaces, limits, when the node's Ray worker runs as root), writes the dataset bytes the trainer
already verified into a fresh work directory (the runner hashes them again before training), and starts the same
``vigil.trainer.runner`` subprocess through :func:`vigil.trainer.executor.execute` (timeout, process-group kill,
protocol/log parsing). Metrics and log lines go back to the trainer as yielded chunks, the outcome and the output
files (read with :func:`~vigil.trainer.sandbox.read_inside`, same checks) as the last one.

The node needs no database, no artifact store and no key: everything it gets travels in the task's arguments, and
everything it gives back goes through the Ray object store to the trainer, which checks and stores it.

A trainer connected through the **Ray client** (``ray://…``) cannot consume a streaming generator (Ray 2.60 refuses
``num_returns="streaming"`` there), so for it the same body runs as :func:`run_on_node_relayed`: a plain task that
puts every chunk but the last into a :class:`RunChannel` actor, which the trainer drains, and returns the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import queue
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

from vigil.trainer.executor import Outcome, execute
from vigil.trainer.sandbox import child_env, prepare, read_inside, warm_numba_cache

#: Largest file the task hands back (the model artifact, the profile), like the local worker's bound.
MAX_OUTPUT_BYTES = 1024**3

_warmed = threading.Event()


def _run_thread(spec: dict[str, Any], request: dict[str, Any], env: dict[str, str], out: queue.Queue[Any]) -> None:
    """Run the local executor in this thread's own event loop; every sink call becomes a queue item."""

    async def metrics(points: list[dict[str, Any]]) -> None:
        out.put(("metrics", points))

    async def logs(lines: list[tuple[str, str]]) -> None:
        out.put(("logs", lines))

    try:
        outcome = asyncio.run(
            execute(
                spec,
                python=sys.executable,
                timeout_s=float(request["timeout_s"]),
                env=env,
                on_metrics=metrics,
                on_logs=logs,
                should_stop=lambda: None,  # the trainer stops a run by cancelling the task (which kills us)
                max_line_chars=int(request["max_line_chars"]),
                flush_interval_s=float(request["flush_interval_s"]),
            )
        )
        out.put(("outcome", outcome))
    except BaseException as exc:  # surfaced to the trainer as the task's error
        out.put(("crash", exc))


def run_on_node(request: dict[str, Any]) -> Generator[dict[str, Any], None, None]:
    """The Ray task: yields ``{"started": …}``, then ``{"metrics": […], "logs": […]}`` chunks, then
    ``{"outcome": {…}, "files": {relative path: bytes}}``."""
    spec = dict(request["spec"])
    options = request["sandbox"]
    base = Path(options.get("work_dir") or Path(tempfile.gettempdir()) / "vigil-ray-work")
    sandbox = prepare(
        enabled=bool(options["enabled"]),
        user=str(options["user"]),
        work_dir=base,
        python=sys.executable,
        max_processes=int(options["max_processes"]),
        max_file_mb=int(options["max_file_mb"]),
        memory_cap_mb=options.get("memory_cap_mb"),
    )
    if not _warmed.is_set():  # once per Ray worker process, as the trainer does once per process
        warm_numba_cache()
        _warmed.set()
    workdir = base / str(spec["run_id"])
    yield {"started": {"host": socket.gethostname(), "pid": os.getpid(), "node_id": _node_id()}}
    try:
        sandbox.make_workdir(workdir)
        staged: dict[str, str] = {}
        for index, data in sorted(request["datasets"].items()):
            target = workdir / "store" / f"{int(index):02d}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            os.chmod(target, 0o440)
            staged[str(index)] = str(target)
        extra_env = sandbox.hand_over(workdir, os.environ.get("NUMBA_CACHE_DIR"))
        threads = int(request["threads"])
        timeout_s = float(request["timeout_s"])
        spec.update(
            workdir=str(workdir),
            staged_datasets=staged,
            dataset_roots=[],  # every dataset arrives staged: the node reads no dataset root
            sandbox=sandbox.spec(spec.get("memory_limit_mb"), timeout_s, threads),
        )
        out: queue.Queue[Any] = queue.Queue()
        worker = threading.Thread(
            target=_run_thread, args=(spec, request, child_env(threads, extra_env), out), daemon=True
        )
        worker.start()
        outcome: Outcome | None = None
        while outcome is None:
            kind, value = out.get()
            if kind == "metrics":
                yield {"metrics": value}
            elif kind == "logs":
                yield {"logs": value}
            elif kind == "crash":
                raise value
            else:
                outcome = value
        worker.join()
        files: dict[str, bytes] = {}
        if outcome.ok and outcome.result is not None:
            for key in ("artifact_path", "profile_path"):
                relative = outcome.result.get(key)
                if relative:
                    files[str(relative)] = read_inside(workdir, str(relative), MAX_OUTPUT_BYTES, sandbox.uid)
        summary = dataclasses.asdict(outcome)
        summary.pop("files", None)
        yield {"outcome": summary, "files": files}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _node_id() -> str | None:
    """The Ray node this task runs on (what the run's log names: which node trained it)."""
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # not inside a Ray worker (a direct call): no node to name
        return None


class RunChannel:
    """The chunks of one relayed run on their way to its trainer (a Ray actor: ``put`` from the task, ``take``
    from the trainer); one per run, killed by the trainer when the run ends."""

    def __init__(self) -> None:
        self._chunks: list[dict[str, Any]] = []

    def put(self, chunk: dict[str, Any]) -> None:
        self._chunks.append(chunk)

    def take(self) -> list[dict[str, Any]]:
        """Every chunk put since the last call, in order."""
        taken, self._chunks = self._chunks, []
        return taken


def run_on_node_relayed(request: dict[str, Any], channel: Any) -> dict[str, Any]:
    """:func:`run_on_node` as a plain task, for a trainer on the Ray client: every chunk but the last goes into
    ``channel`` (a :class:`RunChannel` actor handle); the last (outcome and files) is the task's return value, sent
    only once every earlier chunk has reached the channel (an actor runs one caller's calls in order)."""
    import ray

    last_put = None
    with contextlib.closing(run_on_node(request)) as chunks:  # closed: its work directory is removed at once
        for chunk in chunks:
            if "outcome" in chunk:
                if last_put is not None:
                    ray.get(last_put)
                return chunk
            last_put = channel.put.remote(chunk)
    raise RuntimeError("run_on_node ended without an outcome")
