"""The trainer's worker pool: claims queued runs from Postgres and executes them off the consumer's poll loop.

Training is slow, and a Kafka consumer that stops polling for longer than ``max_poll_interval_ms`` is thrown out of
its group. So the ``training.requested`` handler only records a queued run (inbox + row, one transaction); these
asyncio workers, started in ``on_start``, claim runs with ``FOR UPDATE SKIP LOCKED`` — across every trainer process
sharing the database, so a run executes once however many workers there are — and execute them in subprocesses.

Each running run holds a lease the worker renews (a third of ``trainer_lease_s``); the renewal also carries stop
requests (cancellation, a newer attempt), and it beats from the claim on — staging datasets under load can take
longer than a lease. A reaper in every process marks runs with an expired lease ``lost`` and emits ``training.failed``
(``worker_lost``), which the scheduler turns into the next attempt; a run one of its *own* live workers holds it
renews instead: the lease exists to find dead workers, and an event loop stalled past a lease (a saturated host, a
long synchronous step) is not one — reaping it there failed a fresh-clone CI run with ``worker_lost``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from vigil.artifacts.store import ArtifactError, ArtifactStore, digest_of
from vigil.bus.aio import cancel_and_wait, wait_event
from vigil.bus.context import Emitter
from vigil.datasets.locations import DatasetLocationError, artifact_digest
from vigil.events import canonical_json
from vigil.events.catalog.common import ColumnSpec, DatasetRef
from vigil.events.catalog.training import Environment, Executor, TrainingCompleted, TrainingFailed, TrainingStarted
from vigil.trainer import store
from vigil.trainer.executor import Outcome, child_env, execute
from vigil.trainer.ray_executor import RayOptions, execute_on_ray
from vigil.trainer.runner import RunFailure, entrypoint_refusal, fetch_dataset
from vigil.trainer.sandbox import Sandbox, prepare, read_inside, warm_numba_cache
from vigil.trainer.settings import TrainerSettings

log = logging.getLogger(__name__)

RUNS = Counter("vigil_trainer_runs_total", "Runs finished, by outcome", ["outcome"])
RUNNING = Gauge("vigil_trainer_running", "Runs executing in this process")

SERVICE_ACTOR = "service:trainer"
MAX_ARTIFACT_BYTES = 1024**3
#: Deprecated: the params key of a policy (or a manual trigger) that picked the run's executor, ``local`` or ``ray``,
#: before the policy had its own ``executor`` field (``training.requested``'s ``executor``), which wins over it.
#: Still honoured when the request names no executor; each such run logs a deprecation warning.
EXECUTOR_PARAM = "vigil.executor"
EXECUTORS: tuple[Executor, ...] = ("local", "ray")


def choose_executor(
    requested: Executor | None, params: dict[str, Any], default: Executor, ray_address: str | None
) -> tuple[Executor | None, str | None]:
    """The run's executor and, when it cannot run there, why (an ``invalid_input`` refusal).

    The request's ``executor`` (the policy's field) first; else the deprecated params key ``vigil.executor``; else
    this trainer's ``trainer_executor``. ``ray`` needs ``trainer_ray_address``: without it the run is refused at
    once rather than left to fail later (no retry can give this trainer a cluster). The refusal names where the
    choice came from, so a policy's author sees which setting to change.
    """
    if requested is not None:
        executor, source = requested, "the job's executor"
    elif legacy := params.get(EXECUTOR_PARAM):
        if legacy not in EXECUTORS:
            return None, f"{EXECUTOR_PARAM} {str(legacy)[:100]!r} is not an executor (local, ray)"
        executor, source = legacy, f"params key {EXECUTOR_PARAM} (deprecated)"
    else:
        executor, source = default, "this trainer's trainer_executor"
    if executor == "ray" and not ray_address:
        return executor, (
            f"executor ray ({source}) but this trainer has no trainer_ray_address (VIGIL_TRAINER_RAY_ADDRESS)"
        )
    return executor, None


class StagingFailed(Exception):
    """A dataset in the artifact store cannot be handed to the run (missing, tampered, not its digest)."""


class UnsafeArtifact(Exception):
    """The entrypoint's artifact is not in the format it claims, or needs pickle to load."""


def check_artifact(data: bytes, fmt: str) -> None:
    """Refuse anything but valid JSON, an npz whose arrays load without pickle, or an ONNX protobuf (which the
    registry then vets in full: external data, operator domains, size — its refusal is a ``model.version.rejected``
    with the reason, recorded like any gate's)."""
    if fmt == "json":
        try:
            json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UnsafeArtifact(f"artifact is not valid JSON: {exc}") from exc
        return
    if fmt == "npz":
        import numpy as np

        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                for name in archive.files:
                    archive[name]  # loading each array is the check: object arrays need pickle and raise
        except Exception as exc:
            raise UnsafeArtifact(f"artifact is not a pickle-free npz: {exc}") from exc
        return
    if fmt == "onnx":
        from vigil.modelformat.onnxgraph import parse

        try:
            parse(data, max_bytes=MAX_ARTIFACT_BYTES)
        except ValueError as exc:
            raise UnsafeArtifact(f"artifact is not an ONNX model: {exc}") from exc
        return
    raise UnsafeArtifact(f"artifact format {fmt!r} is not allowed")


class WorkerPool:
    """``trainer_workers`` asyncio workers plus one reaper, for one trainer process."""

    def __init__(self, pool: asyncpg.Pool, settings: TrainerSettings, source: str) -> None:
        self.pool = pool
        self.settings = settings
        self.source = source
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.artifacts: ArtifactStore = settings.artifact_store()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.executed = 0
        self.sandbox: Sandbox | None = None
        self._warm: asyncio.Task[None] | None = None
        #: run id → worker, for the runs this process's workers hold right now (claimed, not yet finished).
        self._held: dict[str, str] = {}

    async def start(self) -> None:
        s = self.settings
        self.sandbox = await asyncio.to_thread(
            prepare,
            enabled=s.trainer_sandbox,
            user=s.trainer_sandbox_user,
            work_dir=s.resolved_work_dir(),
            python=s.trainer_python,
            max_processes=s.trainer_sandbox_max_processes,
            max_file_mb=s.trainer_sandbox_max_file_mb,
            memory_cap_mb=s.trainer_max_memory_limit_mb,
        )
        self._warm = asyncio.create_task(asyncio.to_thread(warm_numba_cache), name="trainer-numba-warm")
        for i in range(self.settings.trainer_workers):
            self._tasks.append(asyncio.create_task(self._work(f"{self.identity}/{i}"), name=f"trainer-worker-{i}"))
        self._tasks.append(asyncio.create_task(self._reap_forever(), name="trainer-reaper"))

    async def stop(self) -> None:
        """Stop the workers; their subprocesses are killed, and their runs' leases expire (then reaped)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks.clear()
        if self._warm is not None:
            await cancel_and_wait(self._warm)  # its thread runs on to its end; nothing waits for it

    def wake(self) -> None:
        self._wake.set()

    # -- claiming and running -----------------------------------------------------------------------------------

    async def _work(self, worker: str) -> None:
        poll = self.settings.trainer_poll_interval_ms / 1000
        if self._warm is not None:
            # Before the first claim, not after: a claimed run's lease is not renewed until it starts executing.
            await asyncio.shield(self._warm)  # each run's copy of the numba cache should hold the kernels
        while True:
            try:
                run = await self._claim(worker)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("claiming a run failed")
                run = None
            if run is None:
                self._wake.clear()
                await wait_event(self._wake, poll)
                continue
            stop: dict[str, str | None] = {"why": None}
            self._held[run.run_id] = worker
            heartbeat = asyncio.create_task(self._heartbeat(worker, run.run_id, stop))
            try:
                await self._run(worker, run, stop)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("run failed in the worker itself", extra={"run_id": run.run_id})
            finally:
                self._held.pop(run.run_id, None)
                await cancel_and_wait(heartbeat)

    async def _claim(self, worker: str) -> store.Run | None:
        async with self.pool.acquire() as conn, conn.transaction():
            run = await store.claim_next(conn, worker, self.settings.trainer_lease_s)
            if run is None:
                return None
            await Emitter(conn, self.source, SERVICE_ACTOR).emit(
                TrainingStarted(
                    model=run.model, job_id=run.job_id, attempt=run.attempt, run_id=run.run_id, worker=worker
                ),
                cause=run.request_envelope(),
            )
        log.info("run claimed", extra={"run_id": run.run_id, "job_id": run.job_id, "attempt": run.attempt})
        return run

    async def _run(self, worker: str, run: store.Run, stop: dict[str, str | None]) -> None:
        workdir = self.settings.resolved_work_dir() / run.run_id
        refusal = entrypoint_refusal(run.entrypoint, self.settings.trainer_entrypoint_allow)
        executor, executor_refusal = choose_executor(
            run.executor, run.params, self.settings.trainer_executor, self.settings.trainer_ray_address
        )
        if EXECUTOR_PARAM in run.params:
            log.warning(
                "params key %s is deprecated, set the policy's executor instead%s", EXECUTOR_PARAM,
                "" if run.executor is None else f" (ignored: the request's executor is {run.executor})",
                extra={"run_id": run.run_id, "job_id": run.job_id},
            )  # fmt: skip
        if executor is not None and run.executor is None:
            async with self.pool.acquire() as conn:
                await store.set_executor(conn, run.run_id, executor)
        refusal = refusal or executor_refusal
        if refusal is not None:
            # Whatever the scheduler sent: an entrypoint outside the allow-list is never imported, not even by a
            # runner subprocess, and an executor this trainer cannot use is never tried; the run fails at once and
            # for good (retrying cannot make it allowed, or give this trainer a Ray cluster).
            await self._finish(worker, run, Outcome(False, "invalid_input", refusal, retryable=False), workdir)
            return
        sandbox = self.sandbox
        assert sandbox is not None, "start() prepares the sandbox"
        try:
            await asyncio.to_thread(sandbox.make_workdir, workdir)
            staged = await asyncio.to_thread(self._stage_datasets, run, workdir)
            extra_env = await asyncio.to_thread(sandbox.hand_over, workdir, os.environ.get("NUMBA_CACHE_DIR"))
        except StagingFailed as exc:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
            await self._finish(worker, run, Outcome(False, "invalid_input", str(exc)[:1000], retryable=False), workdir)
            return
        except OSError as exc:  # the work directory could not be prepared (disk full, permissions): try again later
            log.exception("preparing the run's work directory failed", extra={"run_id": run.run_id})
            await asyncio.to_thread(shutil.rmtree, workdir, True)
            await self._finish(worker, run, Outcome(False, "error", f"work directory: {exc}"[:1000], True), workdir)
            return
        if sandbox.degraded:
            log.warning("run not fully sandboxed: %s", sandbox.degraded, extra={"run_id": run.run_id})
        memory_limit_mb = sandbox.memory_limit_mb(run.memory_limit_mb, self.settings.trainer_default_memory_limit_mb)
        threads = self.settings.trainer_threads_per_run
        RUNNING.inc()
        try:
            spec = {
                "run_id": run.run_id,
                "job_id": run.job_id,
                "model": run.model,
                "entrypoint": run.entrypoint,
                "params": run.params,
                "datasets": run.datasets,
                "code_version": run.code_version,
                "workdir": str(workdir),
                "memory_limit_mb": memory_limit_mb,
                "dataset_roots": [str(p) for p in self.settings.resolved_dataset_roots()],
                "staged_datasets": staged,
                "entrypoint_allow": list(self.settings.trainer_entrypoint_allow),
                "sandbox": sandbox.spec(memory_limit_mb, run.timeout_s, threads),
            }
            if executor == "ray":
                outcome = await execute_on_ray(
                    spec,
                    options=self._ray_options(),
                    timeout_s=run.timeout_s,
                    on_metrics=lambda points: self._save_metrics(run.run_id, points),
                    on_logs=lambda lines: self._save_logs(run.run_id, lines),
                    should_stop=lambda: stop["why"],
                    max_line_chars=self.settings.trainer_max_log_line_chars,
                )
            else:
                outcome = await execute(
                    spec,
                    python=self.settings.trainer_python,
                    timeout_s=run.timeout_s,
                    env=child_env(threads, extra_env),
                    on_metrics=lambda points: self._save_metrics(run.run_id, points),
                    on_logs=lambda lines: self._save_logs(run.run_id, lines),
                    should_stop=lambda: stop["why"],
                    max_line_chars=self.settings.trainer_max_log_line_chars,
                )
            await self._finish(worker, run, outcome, workdir)
        finally:
            RUNNING.dec()
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        self.executed += 1

    def _ray_options(self) -> RayOptions:
        s = self.settings
        assert s.trainer_ray_address
        return RayOptions(
            address=s.trainer_ray_address,
            threads=s.trainer_threads_per_run,
            num_cpus=s.trainer_ray_num_cpus,
            grace_s=s.trainer_ray_grace_s,
            sandbox={
                "enabled": s.trainer_sandbox,
                "user": s.trainer_sandbox_user,
                "max_processes": s.trainer_sandbox_max_processes,
                "max_file_mb": s.trainer_sandbox_max_file_mb,
                "memory_cap_mb": s.trainer_max_memory_limit_mb,
                "work_dir": s.trainer_ray_work_dir,
            },
        )

    def _stage_datasets(self, run: store.Run, workdir: Path) -> dict[str, str]:
        """Copy every dataset into the work directory and return {dataset index: path}: a ``vigil-artifact://``
        one out of the store into ``workdir/store`` — verified against its digest and decrypted here, because the
        runner gets no key — and a ``file://`` one from inside the dataset roots into ``workdir/staged`` while
        hashing it, because the sandboxed runner cannot read the roots. The runner hashes the copy again while it
        takes it into ``data/``. StagingFailed says what is wrong."""
        staged: dict[str, str] = {}
        roots = [str(p) for p in self.settings.resolved_dataset_roots()]
        for index, ref in enumerate(run.datasets):
            try:
                digest = artifact_digest(str(ref["uri"]))
            except DatasetLocationError as exc:
                raise StagingFailed(str(exc)) from exc
            if digest is None:
                try:
                    staged[str(index)] = str(fetch_dataset(ref, index, workdir / "staged", roots).path)
                except RunFailure as exc:
                    raise StagingFailed(str(exc)) from exc
                continue
            label = f"dataset {ref['dataset']} v{ref['version']}"
            if digest != ref["content_digest"]:
                raise StagingFailed(f"{label}: {ref['uri']} is not its content digest {ref['content_digest']}")
            try:
                data = self.artifacts.get(digest)
            except ArtifactError as exc:  # not found, tampered, encrypted without a key
                raise StagingFailed(f"{label}: {exc}") from exc
            target = workdir / "store" / f"{index:02d}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            os.chmod(target, 0o440)
            staged[str(index)] = str(target)
        return staged

    async def _heartbeat(self, worker: str, run_id: str, stop: dict[str, str | None]) -> None:
        interval = self.settings.trainer_lease_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.pool.acquire() as conn:
                    ours, requested = await store.renew_lease(conn, run_id, worker, self.settings.trainer_lease_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease renewal failed", extra={"run_id": run_id})
                continue
            if not ours:
                stop["why"] = "lease lost (the run was reaped)"
                return
            if requested:
                stop["why"] = requested
                return

    async def _save_metrics(self, run_id: str, points: list[dict[str, Any]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await store.append_metrics(conn, run_id, points, self.settings.trainer_max_metric_points)

    async def _save_logs(self, run_id: str, lines: list[tuple[str, str]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await store.append_logs(conn, run_id, lines, self.settings.trainer_max_log_lines)

    # -- outcomes -----------------------------------------------------------------------------------------------

    async def _finish(self, worker: str, run: store.Run, outcome: Outcome, workdir: Path) -> None:
        completed: TrainingCompleted | None = None
        values: dict[str, Any] = {"duration_s": outcome.duration_s, "exit_code": outcome.exit_code}
        if outcome.ok and outcome.result is not None:
            try:
                completed, stored = await asyncio.to_thread(self._collect, run, outcome, workdir)
                values.update(stored)
            except Exception as exc:
                log.exception("collecting the run's artifact failed", extra={"run_id": run.run_id})
                outcome = Outcome(False, "error", f"{type(exc).__name__}: {exc}"[:1000], False, None, outcome.exit_code,
                                  outcome.duration_s)  # fmt: skip
        async with self.pool.acquire() as conn, conn.transaction():
            emitter = Emitter(conn, self.source, SERVICE_ACTOR)
            cause = run.request_envelope()
            if completed is not None:
                try:
                    async with conn.transaction():
                        finished = await store.finish(conn, run.run_id, worker, "succeeded", values)
                except asyncpg.UniqueViolationError:
                    # Another attempt of this job already succeeded: only one training.completed may take effect.
                    await store.finish(
                        conn, run.run_id, worker, "superseded", {**values, "error": "job already has a successful run"}
                    )
                    RUNS.labels("superseded").inc()
                    return
                if finished is None:
                    RUNS.labels("reaped").inc()
                    return
                envelope = await emitter.emit(completed, cause=cause)
                await conn.execute("UPDATE runs SET completed_event_id = $2 WHERE run_id = $1", run.run_id, envelope.id)
                RUNS.labels("succeeded").inc()
                return
            state = "failed"
            if outcome.stopped is not None:
                state = "cancelled" if "cancel" in outcome.stopped else "superseded"
            finished = await store.finish(
                conn, run.run_id, worker, state,
                {**values, "failure_reason": outcome.reason, "error": outcome.error},
            )  # fmt: skip
            if finished is None:
                RUNS.labels("reaped").inc()
                return
            await emitter.emit(
                TrainingFailed(
                    model=run.model,
                    job_id=run.job_id,
                    attempt=run.attempt,
                    run_id=run.run_id,
                    reason=outcome.reason,
                    error=outcome.error[:1024],
                    retryable=outcome.retryable,
                    duration_s=round(outcome.duration_s, 6),
                ),
                cause=cause,
            )
            RUNS.labels(outcome.reason).inc()
            log.warning("run failed", extra={"run_id": run.run_id, "reason": outcome.reason, "error": outcome.error})

    def _collect(self, run: store.Run, outcome: Outcome, workdir: Path) -> tuple[TrainingCompleted, dict[str, Any]]:
        """Verify and store the artifact and the profile (in a thread: hashing and file I/O)."""
        result = outcome.result or {}
        owner = self.sandbox.uid if self.sandbox is not None else None

        def output(relative: str) -> bytes:
            if outcome.files is not None:  # executed on a Ray node, which read them with the same checks
                return outcome.files[relative]
            # The paths come from the run: read only its own regular files inside its work directory.
            return read_inside(workdir, relative, MAX_ARTIFACT_BYTES, owner)

        data = output(str(result["artifact_path"]))
        fmt = str(result["artifact_format"])
        check_artifact(data, fmt)
        digest = self.artifacts.put(data)
        profile: dict[str, Any] | None = None
        profile_uri: str | None = None
        profile_digest: str | None = None
        profile_size: int | None = None
        if result.get("profile_path"):
            raw_profile = output(str(result["profile_path"]))
            loaded = json.loads(raw_profile)
            if not isinstance(loaded, dict):
                raise UnsafeArtifact("reference profile is not a JSON object")
            raw = canonical_json(loaded)
            profile_digest, profile_size = digest_of(raw), len(raw)
            if len(raw) <= self.settings.trainer_profile_inline_max_bytes:
                profile = loaded
            else:
                profile_uri = self.artifacts.uri(self.artifacts.put(raw))
        env = result.get("environment") or {}
        completed = TrainingCompleted(
            model=run.model,
            job_id=run.job_id,
            attempt=run.attempt,
            run_id=run.run_id,
            params=run.params,
            metrics=result.get("metrics") or {},
            artifact_digest=digest,
            artifact_uri=self.artifacts.uri(digest),
            artifact_format=fmt,
            artifact_size_bytes=len(data),
            reference_profile=profile,
            reference_profile_uri=profile_uri,
            reference_profile_digest=profile_digest,
            signature=[ColumnSpec.model_validate(c) for c in (result.get("signature") or [])],
            datasets=[DatasetRef.model_validate(d) for d in run.datasets],
            code_version=run.code_version,
            environment=Environment.model_validate(env),
            duration_s=round(outcome.duration_s, 6),
        )
        stored = {
            "metrics": completed.metrics,
            "artifact_digest": digest,
            "artifact_uri": completed.artifact_uri,
            "artifact_format": fmt,
            "artifact_size_bytes": len(data),
            "profile_digest": profile_digest,
            "profile_uri": profile_uri,
            "profile_size_bytes": profile_size,
            "signature": [c.model_dump() for c in completed.signature],
            "environment": env,
            "error": f"profile not computed: {result['profile_error']}" if result.get("profile_error") else "",
        }
        return completed, stored

    # -- reaping ------------------------------------------------------------------------------------------------

    async def _reap_forever(self) -> None:
        interval = max(0.2, self.settings.trainer_lease_s / 2)
        while True:
            try:
                await self.reap()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reaping expired runs failed")
            await asyncio.sleep(interval)

    async def reap(self) -> int:
        """Runs whose worker stopped renewing its lease → ``lost`` + ``training.failed`` (worker_lost)."""
        async with self.pool.acquire() as conn, conn.transaction():
            expired = await store.expired_runs(conn, limit=50)
            emitter = Emitter(conn, self.source, SERVICE_ACTOR)
            reaped = 0
            for run in expired:
                if run.worker is not None and self._held.get(run.run_id) == run.worker:
                    # Ours and alive, only late to renew (a stalled loop): renew, do not reap.
                    await store.renew_lease(conn, run.run_id, run.worker, self.settings.trainer_lease_s)
                    log.warning("own run's lease had expired; renewed", extra={"run_id": run.run_id})
                    continue
                reaped += 1
                why = f"worker {run.worker} stopped renewing its lease"
                lost = await store.mark_lost(conn, run.run_id, why)
                await emitter.emit(
                    TrainingFailed(
                        model=run.model,
                        job_id=run.job_id,
                        attempt=run.attempt,
                        run_id=run.run_id,
                        reason="worker_lost",
                        error=why,
                        retryable=True,
                        duration_s=max(0.0, lost.duration_s or 0.0),
                    ),
                    cause=run.request_envelope(),
                )
                RUNS.labels("worker_lost").inc()
                log.warning("run reaped", extra={"run_id": run.run_id, "worker": run.worker})
        return reaped
