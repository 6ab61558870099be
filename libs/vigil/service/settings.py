"""Settings shared by every service (pydantic-settings, env prefix ``VIGIL_``).

Kafka-native option names keep their units (``request_timeout_ms``) so operators can map them one to one. Settings
are built in the lifespan or a factory, never at import time, so tests never reach the wrong database.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What every Vigil service needs to start. Subclass per service for its own knobs."""

    model_config = SettingsConfigDict(env_prefix="VIGIL_", extra="ignore")

    service_name: str = "vigil"
    # DATABASE_URL (unprefixed) is honoured too: it is what most platforms inject.
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        validation_alias=AliasChoices("VIGIL_DATABASE_URL", "DATABASE_URL"),
    )
    db_pool_min_size: int = 1
    db_pool_max_size: int = 10
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    kafka_topic_prefix: str = ""  # physical topic = prefix + logical name (tests use a uuid per test)
    kafka_group_prefix: str = ""  # consumer group = prefix + vigil-<service>
    kafka_topic_partitions: int = Field(default=4, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_enable_idempotence: bool = False  # Tansu cannot; Apache Kafka can (config switch, DESIGN §4)
    kafka_request_timeout_ms: int = 30_000
    kafka_session_timeout_ms: int = 10_000
    kafka_max_poll_interval_ms: int = 300_000
    #: Records per poll, and so per batch a batch handler gets (at most).
    kafka_max_poll_records: int = Field(default=500, ge=1, le=10_000)
    #: How long the broker may hold a fetch that finds no new record (Kafka's fetch.max.wait.ms; aiokafka's
    #: default). An event arriving meanwhile may wait for the rest of it: the embedded broker answers a waiting
    #: fetch when it times out, not when a record arrives (measured for the deployer: docs/deployer.md).
    kafka_fetch_max_wait_ms: int = Field(default=500, ge=1, le=30_000)
    kafka_linger_ms: int = 5
    consumer_max_attempts: int = Field(default=3, ge=1)
    consumer_retry_backoff_ms: int = 200
    outbox_poll_interval_ms: int = 200
    outbox_batch_size: int = 500
    outbox_retention_s: float = 86_400.0  # published rows kept this long, for republishing after a broker loss
    broker_epoch_check_interval_ms: int = 1_000
    http_host: str = "127.0.0.1"
    http_port: int = 8100
    http_max_body_bytes: int = 8 * 1024 * 1024
    home: Path = Path(".vigil")
    tokens_file: Path | None = None
    artifact_root: Path | None = None  # default <home>/artifacts; shared by trainer, registry and deployer
    artifact_encryption_key: str | None = Field(default=None, repr=False)  # 64 hex chars = AES-256 key
    otel_exporter: Literal["none", "console", "otlp"] = "none"
    otel_exporter_otlp_endpoint: str | None = None
    log_level: str = "INFO"
    environment: Literal["development", "test", "production"] = "development"

    @field_validator("database_url")
    @classmethod
    def _asyncpg_scheme(cls, value: str) -> str:
        """Accept SQLAlchemy-style ``postgresql+asyncpg://`` URLs too."""
        return value.replace("postgresql+asyncpg://", "postgresql://", 1)

    def resolved_artifact_root(self) -> Path:
        """The artifact store directory: explicit setting, else ``<home>/artifacts``."""
        return self.artifact_root if self.artifact_root is not None else self.home / "artifacts"

    def resolved_tokens_file(self) -> Path:
        """The token file: explicit setting, else ``<home>/tokens.json``."""
        return self.tokens_file if self.tokens_file is not None else self.home / "tokens.json"


def env_snapshot(prefix: str = "VIGIL_") -> dict[str, str]:
    """The VIGIL_* environment, for handing to child processes."""
    return {k: v for k, v in os.environ.items() if k.startswith(prefix)}
