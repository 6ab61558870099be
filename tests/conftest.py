"""Session-wide test infrastructure: one real Kafka and one real Postgres, started lazily, once per session.

The logic lives in ``support/testinfra.py``; this file only turns it into fixtures. Nothing starts until a test
asks for it, so unit tests stay free of infrastructure.
"""

from __future__ import annotations

import asyncio
import os
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

# Before anything imports numba: cache compiled kernels in the repo, not beside site-packages.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))

# CPython 3.11.7 can raise "SystemError: AST constructor recursion depth mismatch" from ast.parse once C code has left
# the interpreter's recursion counter off (seen after TLS handshakes failed in-process). pytest parses a plugin's
# module when it is first imported, and schemathesis's pytest plugin imports this one only at session finish, so a
# session whose tests all passed could still end with that error. Imported here, it is parsed while the counter is
# sound. (Seen twice in this suite, 2026-12-07; the TLS test now runs its server in a process of its own.)
import schemathesis.reporting.html.writer  # noqa: F401

from support import module_costs, signing, testinfra

# Event signing keys for every service and test producer of this run (VIGIL_EVENT_KEYS_DIR, inherited by workers
# and by the service processes tests start); see support/signing.py.
signing.install()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest modules first (``support/module_costs.py``), each module's cases together and in their order."""
    root = config.rootpath
    module_of = {id(item): item.path.relative_to(root).as_posix() for item in items}
    rank = {path: i for i, path in enumerate(module_costs.longest_first([module_of[id(i)] for i in items]))}
    items.sort(key=lambda item: rank[module_of[id(item)]])  # stable: a module's cases keep their order


@pytest.fixture(scope="session")
def _infra_workdir() -> Iterator[Path]:
    path = testinfra.make_workdir()
    yield path
    testinfra.remove_workdir(path)


@pytest.fixture(scope="session")
def kafka(_infra_workdir: Path) -> Iterator[testinfra.KafkaUnderTest]:
    """The session's Kafka (container if Docker answers, else the embedded broker)."""
    handle = testinfra.start_kafka(_infra_workdir)
    yield handle
    handle.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka: testinfra.KafkaUnderTest) -> str:
    """``host:port`` of the session's Kafka. Stable for the whole session, across broker restarts."""
    return kafka.bootstrap_servers


@pytest.fixture(scope="session")
def postgres(_infra_workdir: Path) -> Iterator[testinfra.PostgresUnderTest]:
    """The session's Postgres (container if Docker answers, else DATABASE_URL, else embedded)."""
    handle = testinfra.start_postgres(_infra_workdir)
    yield handle
    handle.close()


@pytest.fixture(scope="session")
def postgres_dsn(postgres: testinfra.PostgresUnderTest) -> str:
    """Superuser DSN of the session's Postgres. Prefer ``fresh_db`` for anything that writes."""
    return postgres.dsn


@pytest.fixture
def fresh_db(postgres: testinfra.PostgresUnderTest) -> Iterator[str]:
    """DSN of a new, uniquely named, empty database; dropped after the test."""
    name, dsn = postgres.create_database()
    yield dsn
    postgres.drop_database(name)


@pytest.fixture
def topic_prefix() -> str:
    """A unique prefix for this test's topics and consumer groups, so tests never see each other's data."""
    return f"test.{uuid.uuid4().hex[:12]}."


@pytest.fixture
def broker_control(kafka: testinfra.KafkaUnderTest) -> Iterator[testinfra.KafkaUnderTest]:
    """``kill()`` / ``start()`` / ``restart()`` the session broker; it is running again after the test."""
    if not kafka.restartable:
        pytest.skip(f"the {kafka.source} Kafka cannot be killed and restarted empty (embedded broker only)")
    yield kafka
    kafka.ensure_running()


@pytest.fixture
def postgres_control(postgres: testinfra.PostgresUnderTest) -> Iterator[testinfra.PostgresUnderTest]:
    """``restart()`` the session Postgres (embedded only); it is running again after the test."""
    if not postgres.restartable:
        pytest.skip(f"the {postgres.source} Postgres cannot be restarted by tests (embedded only)")
    yield postgres
    postgres.ensure_running()


@pytest.fixture(scope="session", autouse=True)
async def _no_task_outlives_the_session() -> AsyncIterator[None]:
    """At the end of the session, every task a test left on the shared loop must end when cancelled: one that does
    not (a loop that swallows its cancellation) would hang the loop's teardown, and so CI, forever. Survivors are
    named with their stacks and fail the session instead."""
    yield
    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for task in left:
        task.cancel()
    if not left:
        return
    _, pending = await asyncio.wait(left, timeout=15)
    if pending:
        described = []
        for task in pending:
            frames = "".join(traceback.format_stack(task.get_stack()[-1])) if task.get_stack() else "(no stack)"
            described.append(f"{task.get_name()} {task.get_coro()!r}\n{frames}")
        report = "\n".join(described)
        pytest.fail(f"{len(pending)} task(s) survived cancellation at the end of the session:\n{report}", pytrace=False)
