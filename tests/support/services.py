"""Run services in-process (real lifespan: pool, migrations, topics, relay, consumer) and talk to them over ASGI —
or, with :func:`served`, over a real local port (for clients that need a socket: the CLI, tritonclient)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from vigil.service.runtime import ServiceDefinition, ServiceRuntime
from vigil.service.settings import ServiceSettings
from vigil.service.tokens import Role, TokenRecord, issue_token, save_tokens

S = TypeVar("S", bound=ServiceSettings)
T = TypeVar("T")


@dataclass
class Tokens:
    """Plaintext tokens for each role, plus one with no role at all."""

    file: Path
    by_role: dict[str, str]

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.by_role[role]}"}


def make_tokens(directory: Path) -> Tokens:
    """Issue one token per role (and a role-less one) into ``directory/tokens.json``."""
    records: list[TokenRecord] = []
    plain: dict[str, str] = {}
    for role in Role:
        token, record = issue_token(f"test-{role.value}", {role})
        records.append(record)
        plain[role.value] = token
    token, record = issue_token("test-nobody", set())
    records.append(record)
    plain["nobody"] = token
    path = directory / "tokens.json"
    save_tokens(path, records)
    return Tokens(path, plain)


#: The consumer-group session timeout of in-process services. It sets how long a service waits for its first
#: partitions: the embedded broker (Tansu 0.6, ``coordinator/group/administrator.rs``) holds every JoinGroup for half
#: the session timeout, in whole seconds, so that other members can join the forming group — 3 s a join at 6 s,
#: 1 s at 2 s (measured). Most integration tests wait for one join, some for several. The suite's integration
#: modules took 1,207 worker-seconds at 6 s and 1,003 at 2 s (2026-12-08, same machine, one run each). The
#: heartbeat is a third of it (``ConsumerConfig.heartbeat_interval_ms``). On the embedded broker a one-member group
#: never evicts its member (each request refreshes the caller's contact before it looks for missed heartbeats); a
#: member of a larger group evicted after a stall of the test's event loop rejoins, which the at-least-once bus
#: absorbs. Apache Kafka refuses sessions under ``group.min.session.timeout.ms`` (6 s by
#: default): ``testinfra`` lowers that on the test container.
TEST_SESSION_TIMEOUT_MS = 2000


def settings_for(
    cls: type[S], *, dsn: str, bootstrap: str, prefix: str, tokens: Tokens | None = None, **overrides: Any
) -> S:
    """Settings pointing a service at the test's database, broker and topic/group namespace."""
    values: dict[str, Any] = {
        "database_url": dsn,
        "kafka_bootstrap_servers": bootstrap,
        "kafka_topic_prefix": prefix,
        "kafka_group_prefix": prefix,
        "kafka_topic_partitions": 2,
        "kafka_session_timeout_ms": TEST_SESSION_TIMEOUT_MS,
        "consumer_retry_backoff_ms": 20,
        "outbox_poll_interval_ms": 50,
        "broker_epoch_check_interval_ms": 500,
        "environment": "test",
    }
    if tokens is not None:
        values["tokens_file"] = tokens.file
    values.update(overrides)
    return cls(**values)


@dataclass
class RunningService:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def runtime(self) -> ServiceRuntime:
        runtime: ServiceRuntime = self.app.state.runtime
        return runtime

    def consumer_state(self) -> str:
        """What the service's bus consumer has done, for a failure message: whether its loop runs, its counts, how
        long since it last polled, and its partitions."""
        consumer = self.runtime.consumer
        if consumer is None:
            return "no consumer"
        inner = consumer._consumer
        assignment = sorted(f"{tp.topic}[{tp.partition}]" for tp in inner.assignment()) if inner is not None else None
        since = time.monotonic() - consumer.last_poll_monotonic if consumer.last_poll_monotonic else None
        return (
            f"running={consumer.running} applied={consumer.applied} skipped={consumer.skipped} "
            f"dead_lettered={consumer.dead_lettered} rejected={consumer.rejected} "
            f"last poll {since if since is None else round(since, 1)} s ago, assigned {assignment}"
        )


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[RunningService]:
    """Start ``app``'s lifespan and yield it with an ASGI client; stop it afterwards."""
    # Shutdown: the services bound their stop steps to fit 30 s (runtime.py); twice that here, so a slow but bounded
    # stop on a loaded machine does not fail the test that ran before it, and a hang still does.
    async with LifespanManager(app, startup_timeout=90, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield RunningService(app, client)


@asynccontextmanager
async def running_definition(definition: ServiceDefinition, settings: ServiceSettings) -> AsyncIterator[RunningService]:
    """Like :func:`running` for an ad-hoc definition (tests that bring their own handlers)."""
    from vigil.service.app import create_app

    async with running(create_app(definition, settings)) as service:
        yield service


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """Serve an app whose lifespan is already running on a free local port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False, ws="none", http="h11")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def eventually(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 45.0, interval: float = 0.2, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns a truthy value; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
