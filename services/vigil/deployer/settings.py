"""Deployer settings."""

from __future__ import annotations

from pydantic import Field

from vigil.service.settings import ServiceSettings


class DeployerSettings(ServiceSettings):
    """Deployer knobs (env ``VIGIL_…``)."""

    service_name: str = "deployer"
    http_port: int = 8104
    #: Short: a rollback request must reach the gateway within ~100 ms, and the embedded broker may hold a record
    #: for up to about half the wait. Paid for while idle: the empty fetches are about a sixth of an idle embedded
    #: stack's CPU (docs/benchmarks/idle.md). On Apache Kafka, which answers when a record arrives, 500 would do.
    kafka_fetch_max_wait_ms: int = Field(default=50, ge=1, le=30_000)
    #: No pause after a small poll (the services' default is 10 ms): the deployer's topics are quiet, so there are
    #: no transactions to save, and a rollback must not wait behind the event polled just before it.
    kafka_poll_linger_ms: int = Field(default=0, ge=0, le=1_000)
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
    #: ONNX models: threads one inference may use (intra-op). 1 keeps a request on one core; the gateway's
    #: parallelism is concurrent requests, and two cores are shared with the event loop and the batcher.
    onnx_intra_op_threads: int = Field(default=1, ge=1, le=64)
    #: ONNX artifacts larger than this are refused at load (the registry refuses them at registration too).
    onnx_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    #: The gateway's serving state is pushed by NOTIFY on every change; this is the fallback: a full reload at
    #: least this often, so a lost notification leaves a route stale for at most this long.
    serving_refresh_interval_ms: int = Field(default=1_000, ge=10)
    #: How often the ticker looks for expired rollout timers (timed pauses, analysis timeouts).
    rollout_tick_interval_ms: int = Field(default=500, ge=10)
    #: Minimum samples per side before an analysis verdict may pass, for deployments that name none.
    default_min_samples: int = Field(default=100, ge=1)
