"""``python -m vigil.trainer.ray_node start …``: ``ray start`` that keeps a loopback node address as given.

Ray 2.60 rewrites ``127.0.0.1`` (as ``--node-ip-address`` and in ``--address``) to the machine's own network
address whenever multi-node clusters are enabled, and refuses to start a worker node when they are not
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). So a cluster whose head and workers all live on one machine — the tests,
a laptop, a single-host compose file — would listen on and connect to the machine's external address. This launcher
runs Ray's own CLI with that one rewrite turned off (:func:`keep_loopback`): a node started with
``--node-ip-address=127.0.0.1`` registers, listens and connects on 127.0.0.1 only. Any other address is passed
through untouched, so on a real multi-host cluster this is just ``ray start``.
"""

from __future__ import annotations

import sys


def keep_loopback() -> None:
    """Make Ray use a loopback host as given instead of replacing it by the machine's network address (for this
    process: the CLI of a node, or the trainer's driver connection)."""
    from ray._private import services

    original = services.resolve_ip_for_localhost

    def resolve(host: str) -> str:
        if host in ("127.0.0.1", "localhost", "::1"):
            return "127.0.0.1" if host == "localhost" else host
        return str(original(host))

    services.resolve_ip_for_localhost = resolve


def main() -> None:
    keep_loopback()
    from ray.scripts.scripts import main as ray_main

    sys.argv[0] = "ray"
    ray_main()


if __name__ == "__main__":
    main()
