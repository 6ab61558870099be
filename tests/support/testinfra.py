"""Real infrastructure for the test suite: one Kafka and one Postgres per test session.

Where they come from, first match wins:

- Kafka: Apache Kafka in a container (testcontainers) when a Docker engine answers, else the embedded Tansu broker
  on a free port.
- Postgres: a container when Docker answers, else ``DATABASE_URL`` / ``VIGIL_DATABASE_URL`` when set, else an
  embedded Postgres in a temporary directory.

``VIGIL_TEST_INFRA=embedded`` skips the Docker probe; ``VIGIL_TEST_INFRA=docker`` insists on Docker. The logic lives
here, importable without pytest (the benchmarks under ``tests/bench`` use it too); ``tests/conftest.py`` only wraps it
in fixtures. Test-only, so under ``tests/`` rather than in the ``vigil`` package.

Only the embedded broker can be killed and restarted by fault tests (a restarted Kafka container keeps its log and
changes its port, so it cannot rehearse "broker lost everything"); ``restartable`` says which is which.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from vigil.stack import StackError, free_port
from vigil.stack.broker import EmbeddedBroker, kafka_metadata_ok
from vigil.stack.postgres import EmbeddedPostgres, create_database, drop_database

__all__ = [
    "KafkaUnderTest",
    "PostgresUnderTest",
    "docker_available",
    "start_kafka",
    "start_postgres",
    "unique_name",
]

DEFAULT_KAFKA_IMAGE = "apache/kafka:3.9.1"
DEFAULT_POSTGRES_IMAGE = "postgres:16-alpine"
Source = Literal["container", "embedded", "external"]


def unique_name(prefix: str) -> str:
    """``<prefix><12 hex>``: unique per call, safe as a Postgres identifier and inside a Kafka topic name."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@functools.cache
def docker_available() -> bool:
    """True when a Docker engine answers a ping (honours ``VIGIL_TEST_INFRA``)."""
    mode = os.environ.get("VIGIL_TEST_INFRA", "auto").lower()
    if mode == "embedded":
        return False
    try:
        import docker  # type: ignore[import-untyped]  # no stubs; used for one ping

        client = docker.from_env(timeout=3)
        try:
            ok = bool(client.ping())
        finally:
            client.close()
    except Exception as exc:
        if mode == "docker":
            raise StackError(f"VIGIL_TEST_INFRA=docker but no Docker engine answers: {exc}") from exc
        return False
    return ok


# -- Kafka ---------------------------------------------------------------------------------------------------------


@dataclass
class KafkaUnderTest:
    """The session's Kafka: where it is, and (embedded only) how to kill and restart it."""

    bootstrap_servers: str
    source: Source
    broker: EmbeddedBroker | None = None
    container: Any = None

    @property
    def restartable(self) -> bool:
        return self.broker is not None

    def _embedded(self) -> EmbeddedBroker:
        if self.broker is None:
            raise StackError(f"the {self.source} Kafka cannot be killed or restarted by tests")
        return self.broker

    def kill(self) -> None:
        """SIGKILL the broker: it is down until ``start()`` or ``restart()``."""
        self._embedded().kill()

    def start(self) -> None:
        """Start it again after ``kill()`` (empty, same port)."""
        self._embedded().start()

    def restart(self) -> None:
        """Stop and start: the broker comes back empty on the same port."""
        self._embedded().restart()

    def ensure_running(self) -> None:
        if self.broker is not None and not self.broker.running:
            self.broker.start()

    def close(self) -> None:
        if self.broker is not None:
            self.broker.stop()
        if self.container is not None:
            self.container.stop()


def _kafka_container() -> KafkaUnderTest:
    from testcontainers.core.container import DockerContainer

    port = free_port()
    docker_host = os.environ.get("DOCKER_HOST", "")
    # The port is published on the Docker host: localhost, unless DOCKER_HOST names a remote engine.
    host = (urlsplit(docker_host).hostname if docker_host.startswith("tcp://") else None) or "127.0.0.1"
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        # In-process services use 2 s sessions (support/services.py: TEST_SESSION_TIMEOUT_MS); Kafka's floor is 6 s.
        "KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "1000",
    }
    container = DockerContainer(os.environ.get("VIGIL_TEST_KAFKA_IMAGE", DEFAULT_KAFKA_IMAGE))
    container.with_bind_ports(9092, port)
    for key, value in env.items():
        container.with_env(key, value)
    container.start()
    deadline = time.monotonic() + 120
    while not kafka_metadata_ok(host, port):
        if time.monotonic() > deadline:
            container.stop()
            raise StackError(f"Kafka container on {host}:{port} not ready after 120s")
        time.sleep(0.5)
    return KafkaUnderTest(f"{host}:{port}", "container", container=container)


def start_kafka(workdir: Path) -> KafkaUnderTest:
    """Start the session's Kafka (see module docstring for the order of preference)."""
    if docker_available():
        return _kafka_container()
    broker = EmbeddedBroker(None, log_file=workdir / "broker.log").start()
    return KafkaUnderTest(broker.bootstrap_servers, "embedded", broker=broker)


# -- Postgres ------------------------------------------------------------------------------------------------------


@dataclass
class PostgresUnderTest:
    """The session's Postgres: a superuser DSN plus helpers for throwaway databases."""

    dsn: str
    source: Source
    server: EmbeddedPostgres | None = None
    container: Any = None
    _created: set[str] = field(default_factory=set)

    @property
    def restartable(self) -> bool:
        return self.server is not None

    def create_database(self, name: str | None = None) -> tuple[str, str]:
        """Create a new database (uniquely named unless ``name``); return ``(name, dsn)``."""
        name = name or unique_name("test_")
        dsn = create_database(self.dsn, name, exist_ok=False)
        self._created.add(name)
        return name, dsn

    def drop_database(self, name: str) -> None:
        drop_database(self.dsn, name)
        self._created.discard(name)

    def restart(self) -> None:
        """Stop and start the embedded server (data kept)."""
        if self.server is None:
            raise StackError(f"the {self.source} Postgres cannot be restarted by tests")
        self.server.restart()

    def ensure_running(self) -> None:
        if self.server is not None and not self.server.running:
            self.server.start()

    def close(self) -> None:
        if self.source == "external":
            for name in list(self._created):  # leave a shared server as we found it
                with contextlib.suppress(Exception):
                    self.drop_database(name)
        if self.server is not None:
            self.server.stop()
        if self.container is not None:
            self.container.stop()


def start_postgres(workdir: Path) -> PostgresUnderTest:
    """Start (or find) the session's Postgres (see module docstring for the order of preference)."""
    if docker_available():
        from testcontainers.community.postgres import PostgresContainer

        container = PostgresContainer(os.environ.get("VIGIL_TEST_POSTGRES_IMAGE", DEFAULT_POSTGRES_IMAGE), driver=None)
        container.start()
        return PostgresUnderTest(container.get_connection_url(), "container", container=container)
    external = os.environ.get("VIGIL_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if external:
        return PostgresUnderTest(external.replace("postgresql+asyncpg://", "postgresql://", 1), "external")
    server = EmbeddedPostgres(workdir / "postgres", log_file=workdir / "postgres.log", durable=False).start()
    return PostgresUnderTest(server.dsn, "embedded", server=server)


def make_workdir() -> Path:
    """A private temporary directory for session infrastructure (outside pytest's 0700 tree, which the Postgres
    OS user could not enter when we run as root)."""
    return Path(tempfile.mkdtemp(prefix="vigil-testinfra-"))


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
