"""Settings shared by every service (pydantic-settings, env prefix ``VIGIL_``).

Kafka-native option names keep their units (``request_timeout_ms``) so operators can map them one to one. Settings
are built in the lifespan or a factory, never at import time, so tests never reach the wrong database.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vigil.artifacts.store import LocalArtifactStore, open_store
from vigil.bus.client_options import KafkaSecurity, SaslMechanism, SecurityProtocol


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
    #: default). On the embedded broker an event arriving meanwhile may wait up to about half of it: Tansu looks for
    #: new records at halving intervals of the wait, not when one arrives (docs/benchmarks/idle.md).
    kafka_fetch_max_wait_ms: int = Field(default=500, ge=1, le=30_000)
    #: After a poll of fewer than half ``kafka_max_poll_records`` records, wait this long before the next poll, so
    #: a steady stream is settled in fewer, larger transactions (the consumer's twin of ``kafka_linger_ms``;
    #: ``EventConsumer._linger``). 0 turns it off.
    kafka_poll_linger_ms: int = Field(default=10, ge=0, le=1_000)
    kafka_linger_ms: int = 5
    #: Broker connection security (aiokafka's options; docs/security.md). The embedded broker is PLAINTEXT only.
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_plain_username: str | None = None
    kafka_sasl_plain_password: str | None = Field(default=None, repr=False)
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    #: Event signing keys (docs/security.md): ``trust/`` (every signer's public key and what it may produce) and
    #: ``private/`` (signing keys). Default ``<home>/keys/events``; the embedded stack creates it.
    event_keys_dir: Path | None = None
    #: This service's signing key; default ``<event_keys_dir>/private/service-<service>.key``.
    event_signing_key_file: Path | None = None
    consumer_max_attempts: int = Field(default=3, ge=1)
    consumer_retry_backoff_ms: int = 200
    outbox_poll_interval_ms: int = 200
    outbox_batch_size: int = 500
    outbox_retention_s: float = 86_400.0  # published rows kept this long, for republishing after a broker loss
    #: Dead letters (which keep the raw record, e.g. a prediction's features) are deleted this long after their
    #: last change; 0 keeps them forever. The vigil.dlq topic keeps its copies 30 days (vigil.bus.topics).
    dead_letter_retention_days: float = Field(default=30.0, ge=0)
    broker_epoch_check_interval_ms: int = 1_000
    http_host: str = "127.0.0.1"
    http_port: int = 8100
    http_max_body_bytes: int = 8 * 1024 * 1024
    #: TLS for the HTTP API: a PEM certificate (chain) and its private key; both or neither. With a CA file as well,
    #: clients must present a certificate it signed (mutual TLS). Without them the service speaks plain HTTP — keep
    #: it on 127.0.0.1 or behind a TLS-terminating proxy (the default binds to loopback).
    http_tls_certfile: Path | None = None
    http_tls_keyfile: Path | None = None
    http_tls_client_ca_file: Path | None = None
    home: Path = Path(".vigil")
    tokens_file: Path | None = None
    artifact_root: Path | None = None  # default <home>/artifacts; shared by trainer, registry and deployer
    artifact_encryption_key: str | None = Field(default=None, repr=False)  # 64 hex chars = AES-256 key
    #: Keys with ids, for rotation (vigil.artifacts.keyring). Default ``<home>/keys/artifacts.json`` when that file
    #: exists (the embedded stack creates it), unless ``artifact_encryption_key`` is set.
    artifact_keyring_file: Path | None = None
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

    def resolved_artifact_keyring_file(self) -> Path | None:
        """The artifact keyring in use: explicit setting, else ``<home>/keys/artifacts.json`` if it exists and no
        single key is configured, else None (a single key, or no encryption)."""
        if self.artifact_keyring_file is not None:
            return self.artifact_keyring_file
        default = self.home / "keys" / "artifacts.json"
        return default if self.artifact_encryption_key is None and default.is_file() else None

    def artifact_store(self) -> LocalArtifactStore:
        """The artifact store these settings describe (root, and its keys when encryption is configured)."""
        return open_store(
            self.resolved_artifact_root(),
            self.artifact_encryption_key,
            keyring_file=self.resolved_artifact_keyring_file(),
        )

    def uvicorn_tls(self) -> dict[str, Any]:
        """uvicorn's TLS arguments from the ``http_tls_*`` settings (empty: plain HTTP)."""
        if (self.http_tls_certfile is None) != (self.http_tls_keyfile is None):
            raise ValueError("set both VIGIL_HTTP_TLS_CERTFILE and VIGIL_HTTP_TLS_KEYFILE, or neither")
        if self.http_tls_certfile is None:
            if self.http_tls_client_ca_file is not None:
                raise ValueError("VIGIL_HTTP_TLS_CLIENT_CA_FILE needs a server certificate (VIGIL_HTTP_TLS_CERTFILE)")
            return {}
        tls: dict[str, Any] = {"ssl_certfile": str(self.http_tls_certfile), "ssl_keyfile": str(self.http_tls_keyfile)}
        if self.http_tls_client_ca_file is not None:
            tls |= {"ssl_ca_certs": str(self.http_tls_client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        return tls

    def production_refusals(self) -> list[str]:
        """Why these settings are unfit for ``environment=production`` (empty: fit). Services add their own."""
        problems: list[str] = []
        if self.artifact_encryption_key is None and self.resolved_artifact_keyring_file() is None:
            problems.append(
                "no artifact encryption key: set VIGIL_ARTIFACT_KEYRING_FILE (or VIGIL_ARTIFACT_ENCRYPTION_KEY)"
            )
        return problems

    def refuse_unsafe_production(self) -> None:
        """Stop the service at start-up, naming every problem, when production runs without its keys (the
        development token is refused by the token store)."""
        if self.environment == "production":
            problems = self.production_refusals()
            if problems:
                raise UnsafeProductionSettings("; ".join(problems))

    def resolved_event_keys_dir(self) -> Path:
        """The event keys directory: explicit setting, else ``<home>/keys/events``."""
        return self.event_keys_dir if self.event_keys_dir is not None else self.home / "keys" / "events"

    def kafka_security(self) -> KafkaSecurity:
        """The broker connection's security options, for every Kafka client the service opens."""
        return KafkaSecurity(
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_plain_username=self.kafka_sasl_plain_username,
            sasl_plain_password=self.kafka_sasl_plain_password,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
        )

    def resolved_tokens_file(self) -> Path:
        """The token file: explicit setting, else ``<home>/tokens.json``."""
        return self.tokens_file if self.tokens_file is not None else self.home / "tokens.json"


def env_snapshot(prefix: str = "VIGIL_") -> dict[str, str]:
    """The VIGIL_* environment, for handing to child processes."""
    return {k: v for k, v in os.environ.items() if k.startswith(prefix)}


class UnsafeProductionSettings(RuntimeError):
    """``environment=production`` with settings that would run it without its keys."""
