"""A network namespace joined to this machine by a veth pair, for tests that cut one service instance off from one
peer while it keeps the others (issue #24 item 2: a network partition between one instance and the broker).

Layout, one /29 of 10.213.0.0/16 per namespace (chosen under a file lock so parallel test workers never share one)::

    host side  .1  the host's own end (the source of what the host sends in: tests' HTTP calls) ─┐
               .3  Postgres listens here (a /32)                                                 ├─ veth ── ns .2
               .4  the broker listens here (a /32)                                              ─┘

Both host addresses are addresses of this machine, so instances outside the namespace reach the broker and
Postgres there too (over the local route). ``cut(ip)`` drops the traffic between the namespace and that one host
address in both directions — a blackhole route to it inside the namespace, and on the host a policy rule
blackholing what it sends to the namespace — so the broker goes dark for the instance inside (open connections
go silent, as across a real partition; new ones fail at once) while its Postgres connections carry on;
``heal(ip)`` takes both away. Only traffic between this machine and a namespace the test made itself.

Clean-up always runs (a context manager; the namespace and veth names carry the pid, and namespaces whose pid is
gone — left by a killed run — are removed at the next allocation). Root and ``ip`` (iproute2) are needed:
:func:`unavailable` says why not when they are missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Namespace", "network_namespace", "unavailable"]

_PREFIX = "vigil-nt"
_LOCK = Path("/tmp/vigil-netns.lock")
_SUBNETS = 8192  # /29s in 10.213.0.0/16
_NAME = re.compile(rf"^{_PREFIX}-(\d+)-(\d+)$")


def _ip(*args: str, netns: str | None = None) -> str:
    argv = ["ip", *(("netns", "exec", netns, "ip") if netns else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def unavailable() -> str | None:
    """Why namespaces cannot be made here (not root, no ``ip``, no netns support), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) on this machine"
    if not Path("/proc/self/ns/net").exists():
        return "this kernel has no network namespaces"
    return None


@dataclass
class Namespace:
    """One namespace and its addresses (see module docstring)."""

    name: str
    host_if: str
    ns_if: str
    subnet: str  # CIDR of the pair: what Postgres must let in
    host_ip: str  # host side .1
    ns_ip: str  # namespace side .2
    postgres_ip: str  # host side .3
    broker_ip: str  # host side .4
    cuts: set[str] = field(default_factory=set)

    @property
    def prefix(self) -> tuple[str, ...]:
        """The command-line prefix that runs a program inside the namespace."""
        return ("ip", "netns", "exec", self.name)

    def cut(self, address: str) -> None:
        """Drop all traffic between the namespace and host ``address``, both ways (established connections too)."""
        _ip("route", "add", "blackhole", f"{address}/32", netns=self.name)
        self.cuts.add(address)
        _ip("rule", "add", "from", f"{address}/32", "to", f"{self.ns_ip}/32", "blackhole")

    def heal(self, address: str) -> None:
        """Undo :meth:`cut`."""
        with contextlib.suppress(RuntimeError):  # a cut half made (the rule failed) is undone as well
            _ip("rule", "del", "from", f"{address}/32", "to", f"{self.ns_ip}/32", "blackhole")
        _ip("route", "del", "blackhole", f"{address}/32", netns=self.name)
        self.cuts.discard(address)

    def routes(self) -> str:
        """The namespace's routing table, for failure messages."""
        return _ip("route", "show", netns=self.name)


def _in_use() -> set[str]:
    """Host-side IPv4 addresses of 10.213.0.0/16 on any interface right now."""
    return set(re.findall(r"inet (10\.213\.\d+\.\d+)", _ip("-o", "-4", "addr", "show")))


def _remove_leftovers() -> None:
    """Delete namespaces of ours whose creating process is gone (a run killed before its clean-up)."""
    for line in _ip("netns", "list").splitlines():
        m = _NAME.match(line.split(" ")[0]) if line else None
        if m and not Path(f"/proc/{m.group(1)}").exists():
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", m.group(0))


def _remove_stale_rules() -> None:
    """Delete cut rules (10.213.x.x → 10.213.x.x blackhole) whose host address no interface has any more."""
    used = _in_use()
    for m in re.finditer(r"from (10\.213\.\d+\.\d+) to (10\.213\.\d+\.\d+) blackhole", _ip("rule", "show")):
        if m.group(1) not in used:
            with contextlib.suppress(RuntimeError):
                _ip("rule", "del", "from", f"{m.group(1)}/32", "to", f"{m.group(2)}/32", "blackhole")


def _subnet(index: int) -> tuple[str, ...]:
    """(CIDR, .1, .2, .3, .4) of the ``index``-th /29 of 10.213.0.0/16."""
    third, fourth = divmod(index * 8, 256)
    base = f"10.213.{third}."
    return (f"{base}{fourth}/29", *(f"{base}{fourth + k}" for k in range(1, 5)))


_counter = iter(range(1_000_000))


@contextlib.contextmanager
def network_namespace() -> Iterator[Namespace]:
    """A fresh namespace wired to the host by a veth pair; removed (with the pair) on exit, whatever happened.

    Processes started inside must be gone before the exit (the namespace lives on while a process holds it).
    """
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    n = next(_counter)
    pid = os.getpid()
    name = f"{_PREFIX}-{pid}-{n}"
    host_if, ns_if = f"vn{pid}x{n}h", f"vn{pid}x{n}n"  # ≤ 15 characters for any Linux pid
    created = False
    space: Namespace | None = None
    try:
        with _LOCK.open("a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            _remove_leftovers()
            _remove_stale_rules()
            used = _in_use()
            start = pid % _SUBNETS
            index = next(i % _SUBNETS for i in range(start, start + _SUBNETS) if _subnet(i % _SUBNETS)[1] not in used)
            subnet, host_ip, ns_ip, postgres_ip, broker_ip = _subnet(index)
            _ip("netns", "add", name)
            created = True
            _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _ip("link", "set", ns_if, "netns", name)
            prefix_len = subnet.split("/")[1]
            _ip("addr", "add", f"{host_ip}/{prefix_len}", "dev", host_if)
            _ip("addr", "add", f"{postgres_ip}/32", "dev", host_if)
            _ip("addr", "add", f"{broker_ip}/32", "dev", host_if)
            _ip("link", "set", host_if, "up")
        _ip("addr", "add", f"{ns_ip}/{prefix_len}", "dev", ns_if, netns=name)
        _ip("link", "set", ns_if, "up", netns=name)
        _ip("link", "set", "lo", "up", netns=name)
        space = Namespace(name, host_if, ns_if, subnet, host_ip, ns_ip, postgres_ip, broker_ip)
        yield space
    finally:
        for address in list(space.cuts if space is not None else ()):  # host-side rules outlive the namespace
            with contextlib.suppress(RuntimeError):
                space.heal(address)
        if created:
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", name)  # takes the namespace's end of the pair, and so the pair
        with contextlib.suppress(RuntimeError):
            _ip("link", "del", host_if)  # already gone with the namespace, unless the move into it failed
