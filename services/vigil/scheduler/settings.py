"""Scheduler settings."""

from __future__ import annotations

from pydantic import Field

from vigil.service.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    """Scheduler knobs (env ``VIGIL_…``). Per-model knobs (debounce, caps, retries) live in the stored policies."""

    service_name: str = "scheduler"
    http_port: int = 8102
    #: How often the ticker fires due triggers, checks timeouts and dispatches pending jobs.
    scheduler_tick_interval_ms: int = Field(default=500, ge=10)
    #: Jobs in ``scheduled`` or ``running`` across all models (the per-model cap is in each policy).
    scheduler_max_concurrent_jobs: int = Field(default=8, ge=1)
    #: A scheduled job that no trainer has started within this time is re-queued (no trainer is consuming).
    scheduler_dispatch_timeout_s: float = Field(default=600.0, gt=0)
    #: A running job with no outcome ``timeout_s + grace`` after it started is re-queued: its trainer vanished
    #: (the trainer enforces ``timeout_s`` itself, so a live trainer always reports before this).
    scheduler_running_grace_s: float = Field(default=120.0, ge=0)
    #: Jobs dispatched per tick at most (keeps one tick's transaction short).
    scheduler_dispatch_batch: int = Field(default=50, ge=1)
