"""``vigil up --replicas``: the count syntax, the launches it makes, and the front that balances connections over the
instances (issue #24 item 1). The stack with real services behind fronts is tested in
``tests/fault/test_failover_registry_auditor.py``."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from vigil.stack._proc import free_port
from vigil.stack.front import FrontProxy
from vigil.stack.supervisor import StackError, default_launches, parse_replicas

pytestmark = pytest.mark.unit


def test_parse_replicas_all_and_per_service() -> None:
    assert parse_replicas(None) == {}
    assert parse_replicas("2") == dict.fromkeys(
        ("registry", "scheduler", "trainer", "deployer", "monitor", "auditor"), 2
    )
    assert parse_replicas("monitor=2, trainer=3") == {"monitor": 2, "trainer": 3}
    assert parse_replicas("2,monitor=1")["monitor"] == 1  # later entries win


@pytest.mark.parametrize("bad", ["nope=2", "monitor=0", "monitor=x", "monitor=17", "-1"])
def test_parse_replicas_refuses_with_the_reason(bad: str) -> None:
    with pytest.raises(StackError, match="--replicas"):
        parse_replicas(bad)


def test_launches_put_instances_on_own_ports_behind_the_service_port() -> None:
    launches = default_launches(["monitor", "auditor"], replicas={"monitor": 2})
    assert [(lh.key, lh.instance) for lh in launches] == [("monitor-1", 1), ("monitor-2", 2), ("auditor", 0)]
    monitors = [lh for lh in launches if lh.name == "monitor"]
    assert {lh.front_port for lh in monitors} == {8105}
    assert len({lh.port for lh in monitors} | {8105}) == 3  # two own ports, neither the front's
    assert launches[-1].port == 8106 and launches[-1].front_port is None


def _echo_server(tag: bytes) -> tuple[int, threading.Event]:
    """A TCP server that answers every connection with ``tag`` + what it received first, then closes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(tag + conn.recv(100))
        sock.close()

    threading.Thread(target=serve, daemon=True).start()
    return int(sock.getsockname()[1]), stop


@pytest.fixture
def backends() -> Iterator[list[tuple[int, threading.Event]]]:
    servers = [_echo_server(b"a:"), _echo_server(b"b:")]
    yield servers
    for _, stop in servers:
        stop.set()


def _ask(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"hi")
        c.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := c.recv(100):
            out += chunk
        return out


def test_front_round_robins_and_skips_an_instance_that_refuses(backends: list[tuple[int, threading.Event]]) -> None:
    ports = [p for p, _ in backends]
    dead = free_port()  # nothing listens there: a killed instance
    front = FrontProxy("t", "127.0.0.1", free_port(), lambda: [ports[0], dead, ports[1]])
    front.start()
    try:
        answers = [_ask(front.port) for _ in range(6)]
    finally:
        front.stop()
    assert set(answers) == {b"a:hi", b"b:hi"}
    assert answers.count(b"a:hi") >= 2 and answers.count(b"b:hi") >= 2
    assert front.connections == 6
