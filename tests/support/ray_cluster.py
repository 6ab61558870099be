"""A real Ray cluster for tests: one head and two worker nodes, each its own ``ray start --block`` process group,
every one of them pinned to 127.0.0.1.

Started through :mod:`vigil.trainer.ray_node` (``ray start`` that keeps a loopback node address: Ray 2.60 would
otherwise swap 127.0.0.1 for the machine's network address). The head has no CPUs, so every task runs on a worker
node; Ray's temp directory (sockets, logs, session files) is a short directory of the cluster's own under /tmp
(Ray's unix socket paths must fit 107 bytes, which a pytest tmp path does not promise). Stopping kills each
node's whole process group — never ``ray stop``, which kills every Ray process on the machine, other tests' too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from vigil.stack import free_port

#: Ray must not phone home, and these are not to be reached from anywhere else.
NODE_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class RayCluster:
    address: str
    temp_dir: Path
    client_port: int  # the head's Ray client server (``ray://127.0.0.1:<client_port>``)
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def client_address(self) -> str:
        """Where a Ray client connects (what compose and k8s give trainers, there as ``ray://<head>:10001``)."""
        return f"ray://127.0.0.1:{self.client_port}"

    def processes(self) -> list[psutil.Process]:
        """Every process of every node (the ``ray start`` processes and all they started)."""
        out: list[psutil.Process] = []
        for node in self.nodes:
            with contextlib.suppress(psutil.NoSuchProcess):
                parent = psutil.Process(node.pid)
                out.extend([parent, *parent.children(recursive=True)])
        return out

    def task_processes(self, function: str = "run_on_node") -> list[psutil.Process]:
        """The Ray worker processes executing a task of ``function`` (their title is ``ray::<function>``)."""
        found = []
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                if " ".join(proc.cmdline()).startswith(f"ray::{function}"):
                    found.append(proc)
        return found


def _start_node(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        node = subprocess.Popen(
            [sys.executable, "-m", "vigil.trainer.ray_node", "start", "--block", "--disable-usage-stats", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **NODE_ENV},
            start_new_session=True,  # its own process group: stopping kills everything the node started
        )
    node.log_path = log  # type: ignore[attr-defined]  # shown when the node dies during start-up
    return node


def _wait_for(predicate: object, timeout: float, what: str, nodes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        for node in nodes:
            if node.poll() is not None:
                tail = getattr(node, "log_path", None)
                text = Path(tail).read_text(errors="replace")[-3000:] if tail else ""
                raise RuntimeError(f"a Ray node exited ({node.returncode}) while waiting for {what}:\n{text}")
        time.sleep(0.3)
    raise TimeoutError(f"Ray cluster: no {what} after {timeout:g}s")


def _start_worker(cluster: RayCluster, log: Path, timeout: float, tries: int = 3) -> subprocess.Popen[bytes]:
    """One worker node, started once the previous one is up. Ray gives a raylet a fixed 30 s to register with the
    head and the node gives up past it — on a loaded 2-core machine that happened, three starts in a row in one CI
    run — so the launcher waits 120 s instead (``vigil.trainer.ray_node.patient_registration``), and a node that
    still gives up during start-up is started again (up to ``tries`` times)."""
    args = [f"--address={cluster.address}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
            "--object-store-memory=100000000"]  # fmt: skip
    for _ in range(tries):
        node = _start_node(args, log)

        def up(node: subprocess.Popen[bytes] = node) -> bool:
            return node.poll() is not None or "Ray runtime started." in log.read_text(errors="replace")

        _wait_for(up, timeout, "worker node start", [])
        if node.poll() is None:
            return node
        node.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(node.pid, signal.SIGKILL)
    raise RuntimeError(f"a Ray worker node did not start in {tries} tries:\n{log.read_text(errors='replace')[-3000:]}")


def stop(cluster: RayCluster) -> None:
    """SIGTERM every node's process group, SIGKILL what is left after 15 s, remove the temp directory."""
    for node in cluster.nodes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for node in cluster.nodes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.wait(timeout=max(0.1, deadline - time.monotonic()))
    for node in cluster.nodes:  # the group outlives its leader when a child ignores SIGTERM
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(node.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.wait(timeout=5)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def ray_cluster(workers: int = 2, *, timeout: float = 180.0) -> Iterator[RayCluster]:
    """A head (no CPUs, running Ray's client server on a free loopback port) and ``workers`` worker nodes of one
    CPU each; stopped on exit, also on failure."""
    temp_dir = Path(tempfile.mkdtemp(prefix="vr-", dir="/tmp"))
    logs = temp_dir / "node-logs"
    logs.mkdir()
    # A free port, not Ray's default 10001: clusters of concurrent runs on one machine must not share it.
    cluster = RayCluster(address="", temp_dir=temp_dir, client_port=free_port())
    try:
        cluster.nodes.append(
            _start_node(
                ["--head", "--node-ip-address=127.0.0.1", "--port=0", "--include-dashboard=false",
                 f"--temp-dir={temp_dir / 't'}", "--num-cpus=0", "--object-store-memory=100000000",
                 f"--ray-client-server-port={cluster.client_port}"],
                logs / "head.log",
            )
        )  # fmt: skip
        current = temp_dir / "t" / "ray_current_cluster"
        _wait_for(lambda: current.is_file() and current.read_text().strip(), timeout, "head address", cluster.nodes)
        cluster.address = current.read_text().strip()
        if not re.fullmatch(r"127\.0\.0\.1:\d+", cluster.address):
            raise RuntimeError(f"the Ray head registered {cluster.address}, not a 127.0.0.1 address")
        for i in range(workers):
            cluster.nodes.append(_start_worker(cluster, logs / f"worker-{i}.log", timeout))
        yield cluster
    finally:
        stop(cluster)


def node_logs(cluster: RayCluster, chars: int = 1500) -> str:
    """The tail of every node's ``ray start`` output (for a failure message)."""
    parts = []
    for node in cluster.nodes:
        path = getattr(node, "log_path", None)
        if path is not None and Path(path).is_file():
            text = Path(path).read_text(errors="replace")[-chars:]
            parts.append(f"--- {Path(path).name} (exit {node.poll()}):\n{text}")
    return "\n".join(parts)


def alive_worker_nodes() -> int:
    """Alive nodes with CPUs, as the connected driver sees them."""
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0)


_SS_PEER = re.compile(r"^(\S+)\s+\d+\s+\d+\s+(\S+)\s+(\S+)\s+.*?users:\(\((.*)\)\)\s*$")


def _host(endpoint: str) -> str:
    host = endpoint.rsplit(":", 1)[0].strip("[]")
    return host.removeprefix("::ffff:")


@dataclass(frozen=True)
class Socket:
    state: str
    local: str  # host only
    peer: str
    line: str  # as ss printed it

    @property
    def loopback_only(self) -> bool:
        """Local and peer on loopback (a listener's peer is a wildcard)."""
        loopback = ("127.0.0.1", "::1")
        wildcard_peer = self.state == "LISTEN" and self.peer in ("*", "0.0.0.0", "::")
        return self.local in loopback and (self.peer in loopback or wildcard_peer)


def tcp_sockets(pids: set[int]) -> list[Socket]:
    """Every TCP socket (listening or connected, ``ss -tanp``) owned by one of ``pids``."""
    out = subprocess.run(["ss", "-tanpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        match = _SS_PEER.match(line.strip())
        if match and {int(p) for p in re.findall(r"pid=(\d+)", match.group(4))} & pids:
            found.append(Socket(match.group(1), _host(match.group(2)), _host(match.group(3)), line.strip()))
    return found
