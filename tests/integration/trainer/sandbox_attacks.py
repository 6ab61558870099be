"""Training entrypoints that attack the training sandbox (driven by ``test_trainer_sandbox.py``).

Each tries one thing. When the attempt works, the entrypoint returns a model whose JSON names the breach — the run
then *succeeds*, which is what the test refuses. When the sandbox refuses, the exception propagates and the run fails
with it as its error. The trainer finds this module on the ``PYTHONPATH`` the test sets, and runs it only because
the test's allow-list names it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from vigil.trainer.sdk import TrainingContext, TrainingResult


def _breach(what: str) -> TrainingResult:
    return TrainingResult(artifact=json.dumps({"breach": what}).encode(), artifact_format="json", metrics={})


def environ(ctx: TrainingContext) -> TrainingResult:
    """The trainer's secrets: in our own environment, then in ``/proc/<trainer>/environ`` and our parent's."""
    leaked = [name for name in ctx.params["secret_vars"] if name in os.environ]
    if leaked:
        return _breach(f"inherited {leaked}")
    for pid in (int(ctx.params["trainer_pid"]), os.getppid()):
        data = Path(f"/proc/{pid}/environ").read_bytes()  # raises when refused
        return _breach(f"read /proc/{pid}/environ: {data[:200]!r}")
    raise AssertionError("unreachable")


def keys(ctx: TrainingContext) -> TrainingResult:
    """The stack's secrets in VIGIL_HOME: admin.token, the artifact keyring, the auditor's signing key."""
    refused = []
    for path in ctx.params["paths"]:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            refused.append(f"{type(exc).__name__}: {path}")
            continue
        return _breach(f"read {path}: {data[:64]!r}")
    raise PermissionError("refused: " + "; ".join(refused))


def network(ctx: TrainingContext) -> TrainingResult:
    """A TCP connection to a port on the loopback (the test's Postgres)."""
    with socket.create_connection(("127.0.0.1", int(ctx.params["port"])), timeout=5):
        return _breach(f"connected to 127.0.0.1:{ctx.params['port']}")


def fork_bomb(ctx: TrainingContext) -> TrainingResult:
    """Fork children that linger (one even leaves the process group) until the kernel refuses another."""
    started = 0
    try:
        while started < int(ctx.params.get("give_up_after", 5000)):
            pid = os.fork()
            if pid == 0:
                if started == 0:
                    os.setsid()  # out of the runner's process group: only the pid namespace still holds it
                time.sleep(3600)
                os._exit(0)
            started += 1
    except OSError as exc:
        print(f"fork refused after {started} children", flush=True)
        raise RuntimeError(f"fork refused after {started} children: {exc}") from exc
    return _breach(f"forked {started} children without a refusal")


def lingering_child(ctx: TrainingContext) -> TrainingResult:
    """Succeed, leaving a child behind that left the process group (it must not outlive the run)."""
    if os.fork() == 0:
        os.setsid()
        time.sleep(3600)
        os._exit(0)
    return TrainingResult(artifact=json.dumps({"ok": True}).encode(), artifact_format="json", metrics={"ok": 1.0})


def big_file(ctx: TrainingContext) -> TrainingResult:
    """A file in our own directory larger than the file-size limit."""
    with (ctx.workdir / "big").open("wb") as fh:
        for _ in range(int(ctx.params["mb"])):
            fh.write(b"\0" * (1 << 20))
    return _breach(f"wrote {ctx.params['mb']} MB")


def write_outside(ctx: TrainingContext) -> TrainingResult:
    """Write a file into each target directory; the run fails listing what was refused and what was written."""
    refused, written = [], []
    for directory in ctx.params["targets"]:
        target = Path(directory) / f"sandbox-pwned-{ctx.run_id}"
        try:
            target.write_text("pwned")
        except OSError as exc:
            refused.append(f"{directory} ({type(exc).__name__})")
        else:
            written.append(directory)
    raise PermissionError(f"refused: {', '.join(refused)} | written: {', '.join(written)}")


def forge_result(ctx: TrainingContext) -> TrainingResult:
    """Skip the SDK: write a ``result`` line ourselves naming a file outside the work directory, and exit 0."""
    mode, target = ctx.params["mode"], ctx.params["target"]
    if mode == "symlink":
        os.symlink(target, ctx.workdir / "evil")
        path = "evil"
    elif mode == "dotdot":
        path = os.path.relpath(target, ctx.workdir)
    else:
        path = target
    ctx._emit({  # the protocol channel the SDK writes to: user code holds it as much as the SDK does
        "type": "result", "metrics": {}, "artifact_path": path, "artifact_format": "json", "profile_path": None,
        "profile_error": None, "signature": [], "environment": {"python": "x", "platform": "x", "packages": {}},
    })  # fmt: skip
    sys.stdout.flush()
    os._exit(0)
