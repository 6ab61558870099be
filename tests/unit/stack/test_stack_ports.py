"""Port choice of the embedded stack: a port a server could bind is "free", whatever its closed connections left.

Issue #25 item 5: a second `vigil up` right after the first stopped moved Postgres from 15432 to another port,
saying "15432 is busy" with no listener on it. The stopped server had closed its connections first, so they sat in
TIME_WAIT on 15432, and the probe bound without SO_REUSEADDR — which Postgres, the broker and uvicorn all set.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from vigil.stack._proc import free_port, port_is_free
from vigil.stack.supervisor import _pick_port

pytestmark = pytest.mark.unit


def _leave_time_wait(port: int) -> None:
    """Listen on ``port`` like a server does, take one connection, close it from the server side first, stop."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server closes first: its end (127.0.0.1:port) goes to TIME_WAIT
    time.sleep(0.05)
    client.close()
    server.close()


def test_a_port_with_only_time_wait_connections_is_free_and_kept() -> None:
    port = free_port()
    _leave_time_wait(port)
    assert port_is_free(port)
    messages: list[str] = []
    assert _pick_port(None, port, "postgres", messages.append) == port
    assert messages == []


def test_a_port_with_a_listener_is_busy_and_a_free_one_is_picked() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not port_is_free(port)
        messages: list[str] = []
        picked = _pick_port(None, port, "postgres", messages.append)
        assert picked != port
        assert messages == [f"postgres: port {port} is busy (another process listens on it), using {picked}"]


def test_free_port_never_hands_out_a_port_twice() -> None:
    """A stack picks every port before it binds any: two picks of one process must differ even when the kernel
    offers the same free port again (a repeat gave a replica and a front one port in a fresh-clone CI run)."""
    picks = [free_port() for _ in range(300)]
    assert len(set(picks)) == len(picks)


def test_readiness_answered_by_another_process_on_the_instance_port_is_not_readiness(tmp_path: Path) -> None:
    """The instance's port answers ``/readyz`` 200 — but from a process that is not the instance (a front that
    took the port first). The supervisor keeps waiting and fails naming the impostor instead of calling it ready."""
    import http.server
    import json
    import subprocess
    import sys
    import threading

    from vigil.stack._proc import StackError
    from vigil.stack.supervisor import ServiceLaunch, ServiceProcess, _wait_ready

    class Impostor(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "ready", "pid": 1}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    instance = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        launch = ServiceLaunch("registry", server.server_address[1], "vigil.registry", instance=1, front_port=1)
        svc = ServiceProcess(launch, tmp_path / "registry-1.log", {}, proc=instance)
        (tmp_path / "registry-1.log").write_text("")
        with pytest.raises(StackError, match="answered by pid 1, not by the instance"):
            _wait_ready([svc], timeout=1.0, echo=lambda _: None)
    finally:
        instance.kill()
        instance.wait()
        server.shutdown()
        server.server_close()
