"""Trainer settings."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import Field

from vigil.datasets.locations import DatasetRootsSettings

#: The built-in examples and the probe (``vigil.trainer.examples``): what the demo, the docs and the tests name.
DEFAULT_ENTRYPOINT_ALLOW = ("vigil.trainer.examples.*",)


class TrainerSettings(DatasetRootsSettings):
    """Trainer knobs (env ``VIGIL_…``). Per-job limits (timeout, memory) come with each ``training.requested``."""

    service_name: str = "trainer"
    http_port: int = 8103
    #: Runs executed at once by this process (each in its own subprocess). Scale out by adding processes too.
    trainer_workers: int = Field(default=2, ge=1, le=256)
    #: How often an idle worker looks for queued runs (it is also woken when a request arrives).
    trainer_poll_interval_ms: int = Field(default=1000, ge=10)
    #: A running run's lease; the worker renews it every third of this. Expired → another process reaps the run
    #: (``training.failed``, reason ``worker_lost``) and the scheduler re-queues the job.
    trainer_lease_s: float = Field(default=30.0, gt=0)
    #: Interpreter for the runner subprocess.
    trainer_python: str = sys.executable
    #: Per-run scratch directories (datasets are copied here and verified); default ``<home>/trainer-work``.
    trainer_work_dir: Path | None = None
    #: Address-space limit (RLIMIT_AS) when a request names none. None = unlimited.
    trainer_default_memory_limit_mb: int | None = Field(default=4096, ge=64)
    #: BLAS/OpenMP/numba threads per run (OMP_NUM_THREADS & co.); runs share the machine's cores.
    trainer_threads_per_run: int = Field(default=1, ge=1)
    trainer_max_log_lines: int = Field(default=10_000, ge=1)
    trainer_max_log_line_chars: int = Field(default=4096, ge=80)
    trainer_max_metric_points: int = Field(default=100_000, ge=1)
    #: Reference profiles up to this size travel inside ``training.completed``; larger ones are stored as
    #: artifacts and referenced by URI.
    #: Reference profiles (raw quantiles, min/max, top categories of the training data) travel in events only by
    #: digest and URI, stored as artifacts: inline, they would be copied into the six-year audit log. A profile up to
    #: this many bytes is inlined instead (0: never).
    trainer_profile_inline_max_bytes: int = Field(default=0, ge=0)
    #: Run log lines (whatever training code printed) are deleted after this many days; 0 keeps them forever.
    trainer_log_retention_days: float = Field(default=30.0, ge=0)
    #: ``file://`` dataset URIs must point inside one of the dataset roots (upstream events name the files, so
    #: without a fence a data.updated could make the trainer read any file). The shared ``dataset_roots``
    #: (``VIGIL_DATASET_ROOTS``, which the registry checks announcements against; default the home directory)
    #: unless this older, trainer-only setting is given. ``vigil-artifact://`` datasets need no root.
    trainer_dataset_roots: list[Path] = Field(default_factory=list)
    #: Entrypoints this trainer will import and run, as ``fnmatch`` patterns on the module (``acme.training.*``,
    #: ``acme.train``) or, with a colon, on the whole ``module:function``. A policy is written by anyone with the
    #: scientist role, so without a fence ``os:system`` would be accepted; anything else fails the run
    #: (``invalid_input``, error ``entrypoint_not_allowed: …``) before a runner starts or imports it. Env
    #: ``VIGIL_TRAINER_ENTRYPOINT_ALLOW`` as a JSON list.
    trainer_entrypoint_allow: list[str] = Field(default_factory=lambda: list(DEFAULT_ENTRYPOINT_ALLOW))

    #: Run user training code in the sandbox (``vigil.trainer.sandbox``): its own uid, no network, own pid and mount
    #: namespaces, limits. Needs the trainer to run as root; otherwise, or when off, runs are DEGRADED (logged).
    trainer_sandbox: bool = True
    #: The unprivileged user runs execute as; created (``useradd --system``) when missing. A number is taken as a
    #: uid without a passwd entry.
    trainer_sandbox_user: str = "vigil-sandbox"
    #: RLIMIT_NPROC of a run: processes *and threads* of the sandbox uid (shared by the runs executing at once).
    trainer_sandbox_max_processes: int = Field(default=256, ge=8)
    #: RLIMIT_FSIZE of a run: the largest file it may write (datasets are copied into its work directory too).
    trainer_sandbox_max_file_mb: int = Field(default=8192, ge=1)
    #: The operator's cap on a run's address space: a request's ``memory_limit_mb`` may lower it, never raise it.
    #: None = no cap.
    trainer_max_memory_limit_mb: int | None = Field(default=16384, ge=64)

    #: Where a run executes when its policy names no ``executor`` (nor the deprecated params key ``vigil.executor``):
    #: ``local`` is a subprocess of this trainer's host, ``ray`` a task on the Ray cluster at ``trainer_ray_address``.
    trainer_executor: Literal["local", "ray"] = "local"
    #: The Ray cluster, for ``executor: ray``: its GCS address ``host:port`` (the trainer joins as a driver;
    #: ``127.0.0.1:port`` stays on loopback) or ``ray://head:10001`` (through the head's Ray client server).
    #: Env ``VIGIL_TRAINER_RAY_ADDRESS``. Unset: runs asking for Ray fail with ``invalid_input``.
    trainer_ray_address: str | None = None
    #: CPUs a run reserves on its Ray node (Ray places it on a node with that many free).
    trainer_ray_num_cpus: float = Field(default=1.0, gt=0)
    #: Past its ``timeout_s``, how long a Ray task may take to be scheduled and report before it is cancelled.
    trainer_ray_grace_s: float = Field(default=120.0, ge=0)
    #: Work directory base on the Ray nodes (default ``<node tmp>/vigil-ray-work``).
    trainer_ray_work_dir: str | None = None

    def resolved_dataset_roots(self) -> list[Path]:
        return list(self.trainer_dataset_roots) if self.trainer_dataset_roots else super().resolved_dataset_roots()

    def resolved_work_dir(self) -> Path:
        return self.trainer_work_dir if self.trainer_work_dir is not None else self.home / "trainer-work"
