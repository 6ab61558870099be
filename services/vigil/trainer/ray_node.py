"""``python -m vigil.trainer.ray_node start …``: ``ray start`` that keeps a loopback node address as given.

Ray 2.60 rewrites ``127.0.0.1`` (as ``--node-ip-address`` and in ``--address``) to the machine's own network
address whenever multi-node clusters are enabled, and refuses to start a worker node when they are not
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). So a cluster whose head and workers all live on one machine — the tests,
a laptop, a single-host compose file — would listen on and connect to the machine's external address. This launcher
runs Ray's own CLI with that one rewrite turned off (:func:`keep_loopback`): a node started with
``--node-ip-address=127.0.0.1`` registers, listens and connects on 127.0.0.1 only. Any other address is passed
through untouched, so on a real multi-host cluster this is just ``ray start``.

A loopback **head** also hands that rule to the processes it starts (:func:`loopback_head_env`): among them is the
Ray client server, which starts one "specific server" per client connection — a fresh Python process that joins
the cluster as a driver with ``ray.init(address="127.0.0.1:…")``. Without the rule that driver rewrote the address
and tried to reach the GCS at the machine's external address (seen here: ``Failed to connect to GCS at address
<external ip>:…``), so a trainer connecting with ``ray://127.0.0.1:<client port>`` hung in ``ray.init``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

#: Ray's own switch for "multi-node clusters": off, its drivers resolve a loopback address to 127.0.0.1 as given.
_MULTI_NODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def keep_loopback() -> None:
    """Make Ray use a loopback host as given instead of replacing it by the machine's network address (for this
    process: the CLI of a node, or the trainer's driver connection)."""
    from ray._private import services

    original = services.resolve_ip_for_localhost

    def resolve(host: str) -> str:
        if host in _LOOPBACK:
            return "127.0.0.1" if host == "localhost" else host
        return str(original(host))

    services.resolve_ip_for_localhost = resolve


#: How long a starting node waits for its raylet to register with the GCS (Ray's own wait is a fixed 30 s).
REGISTER_WAIT_ENV = "VIGIL_RAY_NODE_REGISTER_WAIT_S"
DEFAULT_REGISTER_WAIT_S = 120.0


def patient_registration(wait_s: float) -> None:
    """Give a starting node ``wait_s`` seconds, not Ray's fixed 30, for its raylet to register with the GCS.

    Why: ``ray start`` polls ``services.get_node`` and gives up 30 s after the raylet was launched ("The current node
    timed out during startup"); on a loaded 2-core machine a raylet took longer, three starts in a row (a CI run's
    Ray tests). The poll calls the module attribute, so this wraps it: a failed look-up is retried here, every half
    second, until ``wait_s`` after the first one, before Ray's own loop sees the error and counts its 30 s.
    """
    from ray._private import services

    original = getattr(services, "get_node", None)
    if original is None:  # a Ray that renamed the look-up: its own 30 s apply, nothing breaks
        return
    deadline: list[float] = []

    def get_node(*args: object, **kwargs: object) -> object:
        if not deadline:
            deadline.append(time.monotonic() + wait_s)
        while True:
            try:
                return original(*args, **kwargs)
            except RuntimeError:
                if time.monotonic() >= deadline[0]:
                    raise
                time.sleep(0.5)

    services.get_node = get_node


def loopback_head_env(argv: Sequence[str]) -> dict[str, str]:
    """What a head started with a loopback ``--node-ip-address`` puts into the environment of every process it
    starts (Ray's client server and its per-client drivers among them): Ray's multi-node switch off, so that a
    driver there resolves ``127.0.0.1`` as given, as :func:`keep_loopback` does in this process. Nothing for a
    worker node (Ray refuses to start one with the switch off; its processes get their addresses from the raylet)
    or a head on any other address."""
    args = list(argv)
    ips = [a.split("=", 1)[1] for a in args if a.startswith("--node-ip-address=")]
    ips += [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--node-ip-address"]
    if "--head" in args and ips and all(ip in _LOOPBACK for ip in ips):
        return {_MULTI_NODE: "0"}
    return {}


def main() -> None:
    os.environ.update(loopback_head_env(sys.argv[1:]))
    keep_loopback()
    patient_registration(float(os.environ.get(REGISTER_WAIT_ENV, DEFAULT_REGISTER_WAIT_S)))
    from ray.scripts.scripts import main as ray_main

    sys.argv[0] = "ray"
    ray_main()


if __name__ == "__main__":
    main()
