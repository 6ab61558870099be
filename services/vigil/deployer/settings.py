"""Deployer settings."""

from __future__ import annotations

from pydantic import Field

from vigil.service.settings import ServiceSettings


class DeployerSettings(ServiceSettings):
    """Deployer knobs (env ``VIGIL_…``)."""

    service_name: str = "deployer"
    http_port: int = 8104
    #: Most rows one predict request may carry (more → 413 with the limit in the message).
    gateway_max_rows: int = Field(default=1_000, ge=1, le=10_000)
    #: prediction.logged batching: flush a (deployment, version, variant) group at this many rows …
    gateway_log_max_rows: int = Field(default=2_000, ge=1, le=10_000)
    #: … or this long after its first row, whichever comes first.
    gateway_log_flush_ms: int = Field(default=200, ge=1)
    #: Bound of the logging queue; beyond it rows are dropped (and counted), never waited for.
    gateway_log_max_queued_rows: int = Field(default=200_000, ge=1)
    #: Loaded models kept in memory (LRU by artifact digest).
    model_cache_size: int = Field(default=32, ge=2)
    #: How often the ticker looks for expired rollout timers (timed pauses, analysis timeouts).
    rollout_tick_interval_ms: int = Field(default=500, ge=10)
    #: Minimum samples per side before an analysis verdict may pass, for deployments that name none.
    default_min_samples: int = Field(default=100, ge=1)
