"""The embedded stack: broker, Postgres, the supervisor behind ``vigil up`` and ``vigil status``."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from typer.testing import CliRunner

from support import testinfra
from vigil.cli.main import app
from vigil.stack import supervisor
from vigil.stack.broker import EmbeddedBroker, kafka_metadata_ok
from vigil.stack.postgres import EmbeddedPostgres
from vigil.stack.services import SERVICES
from vigil.stack.state import StackPaths, read_state, write_state
from vigil.stack.supervisor import ServiceLaunch, StackError, default_launches, running_stack

pytestmark = pytest.mark.integration

TESTS_DIR = Path(__file__).resolve().parents[1]
FAKE_SERVICE = "fixtures_fake_service"


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A temp dir the Postgres OS user can enter (pytest's own tmp tree is 0700 when we are root)."""
    path = testinfra.make_workdir()
    yield path
    testinfra.remove_workdir(path)


# -- helpers -------------------------------------------------------------------------------------------------------


async def create_topic(bootstrap: str, topic: str, partitions: int = 2) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def list_topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send(topic, value, key=f"k{i % 3}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, group: str | None, expected: int, wait_s: float = 20.0) -> list[bytes]:
    """Read ``expected`` records from the start of ``topic`` (in a consumer group unless ``group`` is None)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + wait_s
        while len(got) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                got.extend(r.value for r in records if r.value is not None)
        if group is not None:
            await consumer.commit()
    finally:
        await consumer.stop()
    return got


def vigil_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vigil.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def wait_for_state(paths: StackPaths, proc: subprocess.Popen[str], timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(paths)
        if state is not None:
            return state
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"vigil up exited early ({proc.returncode}):\n{out}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail("vigil up did not publish stack.json in time")


def stop_cli(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return out


# -- broker ----------------------------------------------------------------------------------------------------------


async def test_broker_accepts_produce_and_consume(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = f"{topic_prefix}roundtrip"
    await create_topic(kafka_bootstrap, topic)
    values = [f"event-{i}".encode() for i in range(20)]
    await produce(kafka_bootstrap, topic, values)
    got = await consume(kafka_bootstrap, topic, f"{topic_prefix}group", expected=len(values))
    assert sorted(got) == sorted(values)


async def test_broker_killed_and_restarted_comes_back_empty_and_usable(
    broker_control: testinfra.KafkaUnderTest, topic_prefix: str
) -> None:
    bootstrap = broker_control.bootstrap_servers
    host, _, port = bootstrap.rpartition(":")
    before = f"{topic_prefix}before"
    await create_topic(bootstrap, before)
    await produce(bootstrap, before, [b"lost"])

    broker_control.kill()
    assert not kafka_metadata_ok(host, int(port))
    broker_control.start()

    assert broker_control.bootstrap_servers == bootstrap  # same address after restart
    assert before not in await list_topics(bootstrap)  # memory storage: topics and log are gone
    after = f"{topic_prefix}after"
    await create_topic(bootstrap, after)
    await produce(bootstrap, after, [b"a", b"b"])
    # No consumer group here: joining one costs the embedded broker ~5 s, and the round-trip test covers groups.
    assert sorted(await consume(bootstrap, after, None, expected=2)) == [b"a", b"b"]


def test_broker_ignores_a_stale_pid_file(workdir: Path) -> None:
    pid_file = workdir / "broker.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # a live process that is not a broker: must not be touched
    with EmbeddedBroker(log_file=workdir / "broker.log", pid_file=pid_file) as broker:
        assert kafka_metadata_ok(broker.host, broker.port)
        assert int(pid_file.read_text().split()[0]) == broker.pid
    assert not pid_file.exists()
    assert not kafka_metadata_ok(broker.host, broker.port)


# -- postgres ----------------------------------------------------------------------------------------------------


async def test_postgres_keeps_data_across_restart_and_stale_pid_file(workdir: Path) -> None:
    data = workdir / "pg"
    with EmbeddedPostgres(data, durable=False) as pg:
        dsn = pg.create_database("keep")
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('survives')")
        finally:
            await conn.close()
        pg.restart()
        assert await _fetch_one(dsn, "SELECT v FROM t") == "survives"
        port = pg.port

    # A crash leaves postmaster.pid behind; here it names a live process that is not Postgres.
    (data / "postmaster.pid").write_text(f"{os.getpid()}\n{data}\n0\n{port}\n\n127.0.0.1\n0 0\nready\n")
    with EmbeddedPostgres(data, port, durable=False) as pg:
        assert await _fetch_one(pg.dsn_for("keep"), "SELECT v FROM t") == "survives"
        assert pg.create_database("keep") == pg.dsn_for("keep")  # idempotent


async def test_fresh_db_is_empty_and_private(fresh_db: str, postgres_dsn: str) -> None:
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        assert await conn.fetchval("SELECT current_database()") != "postgres"
    finally:
        await conn.close()


async def _fetch_one(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


# -- vigil up / vigil status -------------------------------------------------------------------------------------


def _superuser_dsn(state: dict[str, Any], paths: StackPaths) -> str:
    """The state file names Postgres without its password (``***``); the superuser's is in the home's keys (0600)."""
    dsn = str(state["postgres"]["dsn"])
    assert "***" in dsn and paths.postgres_superuser.read_text().strip() not in dsn
    assert stat.S_IMODE(paths.postgres_superuser.stat().st_mode) == 0o600
    return dsn.replace("***", paths.postgres_superuser.read_text().strip())


async def test_vigil_up_no_services_starts_stops_and_keeps_state(workdir: Path) -> None:
    home = workdir / "home"
    paths = StackPaths(home)
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "VIGIL_DATABASE_URL"}}
    env |= {"VIGIL_HOME": str(home), "VIGIL_POSTGRES_FSYNC": "off"}  # fsync makes the first initdb ~4 s slower
    args = ["up", "--no-services", "--broker-port", "0", "--postgres-port", "0"]

    proc = vigil_cli(*args, env=env)
    state = wait_for_state(paths, proc)
    status = CliRunner().invoke(app, ["status", "--json", "--home", str(home)])
    assert status.exit_code == 0, status.output
    report = json.loads(status.output)
    assert report["healthy"] is True
    assert report["broker"]["healthy"] is True
    assert report["postgres"]["healthy"] is True
    assert stat.S_IMODE(paths.admin_token.stat().st_mode) == 0o600
    token = paths.admin_token.read_text()
    conn = await asyncpg.connect(_superuser_dsn(state, paths))
    try:
        await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
    finally:
        await conn.close()
    infra_pids = [state["broker"]["pid"], state["postgres"]["pid"]]

    out = stop_cli(proc)
    assert "Vigil stopped." in out
    assert read_state(paths) is None
    assert not any(psutil.pid_exists(int(p)) for p in infra_pids)
    assert CliRunner().invoke(app, ["status", "--json", "--home", str(home)]).exit_code == 1

    # Second start, interrupted like Ctrl-C: same admin token, Postgres data still there.
    proc = vigil_cli(*args, env=env)
    state = wait_for_state(paths, proc)
    try:
        assert paths.admin_token.read_text() == token
        assert await _fetch_one(_superuser_dsn(state, paths), "SELECT v FROM kept") == 42
    finally:
        stop_cli(proc, signal.SIGINT)


def test_vigil_status_exit_codes(workdir: Path) -> None:
    runner = CliRunner()
    home = workdir / "nothing"
    result = runner.invoke(app, ["status", "--json", "--home", str(home)])
    assert result.exit_code == 1
    assert json.loads(result.output)["running"] is False

    paths = StackPaths(workdir / "stale")
    write_state(paths, {"pid": 2**22 + 1, "broker": {"bootstrap_servers": "127.0.0.1:1"}, "services": {}})
    result = runner.invoke(app, ["status", "--json", "--home", str(paths.home)])
    assert result.exit_code == 1
    assert json.loads(result.output)["healthy"] is False


def _fake(name: str) -> ServiceLaunch:
    return ServiceLaunch(name, testinfra.free_port(), FAKE_SERVICE)


def test_running_stack_with_services_reports_health(workdir: Path, postgres_dsn: str) -> None:
    runner = CliRunner()
    home = workdir / "svc"
    launches = [_fake("alpha"), _fake("beta")]
    with running_stack(
        home, services=launches, broker_port=0, database_url=postgres_dsn, extra_env={"PYTHONPATH": str(TESTS_DIR)}
    ) as stack:
        assert stack.url("alpha") == f"http://127.0.0.1:{launches[0].port}"
        principals = {t["principal"] for t in json.loads(StackPaths(home).tokens_file.read_text())["tokens"]}
        assert principals == {"admin", "service:alpha", "service:beta"}
        result = runner.invoke(app, ["status", "--json", "--home", str(home)])
        assert result.exit_code == 0, result.output
        assert [s["healthy"] for s in json.loads(result.output)["services"]] == [True, True]

        beta = stack.services["beta"]
        assert beta.proc is not None
        beta.proc.kill()
        beta.proc.wait()
        result = runner.invoke(app, ["status", "--json", "--home", str(home)])
        assert result.exit_code == 1
        by_name = {s["name"]: s["healthy"] for s in json.loads(result.output)["services"]}
        assert by_name == {"alpha": True, "beta": False}
        pids = [stack.broker.pid, stack.services["alpha"].pid]
    assert not any(p is not None and psutil.pid_exists(p) for p in pids)
    assert read_state(StackPaths(home)) is None


@pytest.mark.parametrize(("mode", "needle"), [("crash", "boom, cannot start"), ("never-ready", "not ready after")])
def test_running_stack_names_the_service_that_fails(workdir: Path, postgres_dsn: str, mode: str, needle: str) -> None:
    home = workdir / mode
    launches = [_fake("steady"), _fake("flaky")]
    children_before = {p.pid for p in psutil.Process().children()}
    env = {"PYTHONPATH": str(TESTS_DIR), "FAKE_SERVICE_MODE": mode, "FAKE_SERVICE_TARGET": "flaky"}
    stack = running_stack(
        home, services=launches, broker_port=0, database_url=postgres_dsn, extra_env=env, ready_timeout=3
    )
    with pytest.raises(StackError, match="service flaky") as err, stack:
        pytest.fail("the stack must not come up")
    assert needle in str(err.value)
    assert "steady" not in str(err.value)
    assert read_state(StackPaths(home)) is None
    assert {p.pid for p in psutil.Process().children()} <= children_before  # broker and both services are gone


def test_second_stack_on_the_same_home_is_refused(workdir: Path, postgres_dsn: str) -> None:
    home = workdir / "shared"
    with running_stack(home, services=[], broker_port=0, database_url=postgres_dsn) as first:
        second = running_stack(home, services=[], broker_port=0, database_url=postgres_dsn)
        with pytest.raises(StackError, match="already running"), second:
            pytest.fail("a second stack must not start")
        # `vigil up` says so and exits non-zero, touching nothing of the running stack.
        env = {**os.environ, "VIGIL_HOME": str(home), "DATABASE_URL": postgres_dsn}
        proc = vigil_cli("up", "--no-services", "--broker-port", "0", env=env)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 1, out
        assert f"a stack is already running from {home} (supervisor pid {os.getpid()})" in out
        assert first.broker.running


async def test_a_restarted_stack_keeps_postgres_on_its_port(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #25 item 5: right after a stack stopped, the next `vigil up` on its home moved Postgres to another port
    ("busy" with no listener: the old server's closed connections in TIME_WAIT). And when a killed run left its
    Postgres running, a new start stops that one first instead of moving away from it."""
    home = workdir / "again"
    port = testinfra.free_port()
    monkeypatch.setattr(supervisor, "DEFAULT_POSTGRES_PORT", port)  # the default port, without taking 15432
    messages: list[str] = []
    with running_stack(home, services=[], broker_port=0, postgres_durable=False, echo=messages.append) as stack:
        assert stack.postgres is not None and stack.postgres.port == port, messages
        conn = await asyncpg.connect(stack.database_url)  # open at shutdown: the server closes it first
    await conn.close()
    with running_stack(home, services=[], broker_port=0, postgres_durable=False, echo=messages.append) as stack:
        assert stack.postgres is not None and stack.postgres.port == port, messages

    leftover = EmbeddedPostgres(StackPaths(home).postgres_data, port, durable=False).start()  # a killed run's
    try:
        with running_stack(home, services=[], broker_port=0, postgres_durable=False, echo=messages.append) as stack:
            assert stack.postgres is not None and stack.postgres.port == port, messages
            assert await _fetch_one(stack.database_url, "SELECT 1") == 1
            assert leftover.pid is None  # stopped by the new start
    finally:
        leftover.stop()
    assert not [m for m in messages if "busy" in m]


def test_the_stack_writes_nothing_into_the_working_directory(
    workdir: Path, fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #25 item 5: the monitor used to leave `vigil-monitor-streams-data/` (faust's data dir) wherever
    `vigil up` was started. Every service runs here from an empty working directory, which must stay empty."""
    cwd = workdir / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with running_stack(
        workdir / "clean-home", services=default_launches(free_ports=True), broker_port=0, database_url=fresh_db
    ) as stack:
        assert sorted(stack.services) == sorted(s.name for s in SERVICES)
    assert sorted(p.name for p in cwd.iterdir()) == []


def test_supervisor_restarts_a_service_that_died(workdir: Path, postgres_dsn: str) -> None:
    launch = _fake("phoenix")
    env = {"PYTHONPATH": str(TESTS_DIR)}
    with running_stack(
        workdir / "phoenix", services=[launch], broker_port=0, database_url=postgres_dsn, extra_env=env
    ) as stack:
        svc = stack.services["phoenix"]
        assert svc.proc is not None
        first_pid = svc.proc.pid
        svc.proc.kill()
        svc.proc.wait()
        deadline = time.monotonic() + 10
        while svc.pid in (None, first_pid) and time.monotonic() < deadline:
            stack.check_children()
            time.sleep(0.1)
        assert svc.pid not in (None, first_pid)
        assert svc.restarts == 1
        stack.publish()
        assert read_state(stack.paths)["services"]["phoenix"]["pid"] == svc.pid  # type: ignore[index]
