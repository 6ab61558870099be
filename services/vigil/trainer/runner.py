"""``python -m vigil.trainer.runner <spec.json>``: one training run, isolated in its own process.

The trainer's worker starts this with a timeout; this process limits itself before any user code runs:

0. with ``spec["sandbox"]`` (always, from the worker), confines itself first (:mod:`vigil.trainer.confine`): new
   network, pid and mount namespaces, hard limits, the sandbox uid, then ``exec`` of itself with ``--confined``;
1. dies with its parent (``PR_SET_PDEATHSIG``), so a killed worker leaves no orphan training behind;
2. caps its address space (``RLIMIT_AS``) at the job's memory limit and disables core dumps;
3. copies every dataset version (a ``file://`` URI inside the dataset roots, or the copy of a
   ``vigil-artifact://`` object the worker took out of the store) into the work directory while hashing it, and
   refuses a digest mismatch — the entrypoint only ever reads verified bytes;
4. imports and calls the entrypoint, then computes the reference profile of the returned training features;
5. writes the artifact and the profile into the work directory for the worker to verify and store.

Protocol: the original stdout carries JSON lines for the worker (``metric`` while running, then one ``result`` or
``failed``); fd 1 is then pointed at stderr, so whatever the user code prints lands in the captured log instead of
corrupting the protocol.
"""

from __future__ import annotations

import ctypes
import fnmatch
import hashlib
import importlib
import importlib.metadata
import json
import math
import os
import platform
import resource
import shutil
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from vigil.datasets.locations import DatasetLocationError, artifact_digest, local_dataset_path
from vigil.trainer.confine import CONFINED_FLAG, confine
from vigil.trainer.sdk import SAFE_FORMATS, DatasetInput, TrainingContext, TrainingResult, protocol_line

EXIT_OK = 0
EXIT_FAILED = 3
_PR_SET_PDEATHSIG = 1


class RunFailure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def die_with_parent(parent_pid: int | None) -> None:
    """Ask the kernel to SIGKILL us when the worker process dies (Linux); exit if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the worker's process-group kill still applies
        pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(EXIT_FAILED)


def limit_resources(memory_limit_mb: int | None) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_limit_mb:
        limit = int(memory_limit_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _local_path(uri: str, roots: list[str], staged: str | None = None) -> Path:
    """The file to read for a dataset URI: a ``file://`` path inside the roots, or — for a ``vigil-artifact://``
    URI — the copy the worker took out of the store (verified and decrypted there; the runner has no key)."""
    if staged is not None:  # the worker copied and verified it already (the sandbox cannot read the roots)
        return Path(staged)
    try:
        if artifact_digest(uri) is not None:
            if staged is None:
                raise RunFailure("invalid_input", f"dataset {uri[:200]} was not fetched from the artifact store")
            return Path(staged)
        path = local_dataset_path(uri, roots)
    except DatasetLocationError as exc:
        raise RunFailure("invalid_input", str(exc)) from exc
    if not path.is_file():
        raise RunFailure("invalid_input", f"dataset file not found: {path}")
    return path


def fetch_dataset(
    ref: dict[str, Any], index: int, workdir: Path, roots: list[str], staged: str | None = None
) -> DatasetInput:
    """Copy one dataset version into ``workdir/data`` while hashing; the copy is used only if the digest matches."""
    source = _local_path(ref["uri"], roots, staged)
    target_dir = workdir / "data"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{index:02d}-{ref['dataset']}{''.join(source.suffixes)[-16:]}"
    digest = hashlib.sha256()
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            dst.write(chunk)
    actual = "sha256:" + digest.hexdigest()
    if actual != ref["content_digest"]:
        target.unlink(missing_ok=True)
        raise RunFailure(
            "invalid_input",
            # The actual digest is not echoed: it would reveal the hash of whatever file the URI named.
            f"dataset {ref['dataset']} v{ref['version']}: content does not match the registered digest "
            f"{ref['content_digest']}",
        )
    os.chmod(target, 0o440)
    return DatasetInput(ref["dataset"], int(ref["version"]), ref["content_digest"], ref["uri"], target)


#: The prefix of the ``error`` of a run refused by the allow-list (its ``reason`` is ``invalid_input``).
NOT_ALLOWED = "entrypoint_not_allowed"


def entrypoint_refusal(entrypoint: str, allow: Sequence[str]) -> str | None:
    """Why ``entrypoint`` may not run under the ``allow`` patterns, or None when one of them matches.

    A pattern without a colon is matched (``fnmatch``, case-sensitive) against the module, one with a colon
    against the whole ``module:function``. Nothing is imported to decide: importing is already running code.
    """
    module_name, _, _func = entrypoint.partition(":")
    for pattern in allow:
        if fnmatch.fnmatchcase(entrypoint if ":" in pattern else module_name, pattern):
            return None
    return f"{NOT_ALLOWED}: {entrypoint[:300]} matches none of trainer_entrypoint_allow {list(allow)}"[:1000]


def load_entrypoint(entrypoint: str, allow: Sequence[str] | None = None) -> Any:
    """Import and return the entrypoint; with ``allow``, refuse (before importing) one outside the patterns."""
    if allow is not None and (refusal := entrypoint_refusal(entrypoint, allow)) is not None:
        raise RunFailure("invalid_input", refusal)
    module_name, _, func_name = entrypoint.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise RunFailure("invalid_input", f"cannot load entrypoint {entrypoint}: {exc}") from exc
    if not callable(func):
        raise RunFailure("invalid_input", f"entrypoint {entrypoint} is not callable")
    return func


def environment() -> dict[str, Any]:
    """Interpreter, platform and every installed distribution with its version."""
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and len(packages) < 2048:
            packages[str(name)[:128]] = str(dist.version)[:128]
    return {"python": platform.python_version(), "platform": platform.platform()[:256], "packages": packages}


def _check_metrics(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, dict):
        raise RunFailure("error", "TrainingResult.metrics must be a dict of name → number")
    out: dict[str, float] = {}
    for name, value in metrics.items():
        number = float(value)
        if not math.isfinite(number):
            raise RunFailure("error", f"metric {name!r} is not finite ({value!r})")
        out[str(name)] = number
    return out


def run(spec: dict[str, Any], proto: TextIO) -> dict[str, Any]:
    """Fetch, train, profile; returns the ``result`` message. Raises RunFailure / MemoryError."""
    workdir = Path(spec["workdir"])

    def emit(message: dict[str, Any]) -> None:
        proto.write(protocol_line(message))
        proto.flush()

    staged = spec.get("staged_datasets") or {}
    datasets = [
        fetch_dataset(ref, i, workdir, spec.get("dataset_roots") or [], staged.get(str(i)))
        for i, ref in enumerate(spec["datasets"])
    ]
    # The worker checked already; checked again here so a runner started by hand is fenced too.
    allow = spec.get("entrypoint_allow")
    func = load_entrypoint(spec["entrypoint"], None if allow is None else list(allow))
    ctx = TrainingContext(
        run_id=spec["run_id"],
        job_id=spec["job_id"],
        model=spec["model"],
        params=dict(spec["params"]),
        datasets=datasets,
        code_version=spec["code_version"],
        workdir=workdir,
        emit=emit,
    )
    result = func(ctx)
    if not isinstance(result, TrainingResult):
        raise RunFailure("error", f"entrypoint returned {type(result).__name__}, expected TrainingResult")
    if result.artifact_format not in SAFE_FORMATS or not isinstance(result.artifact, bytes | bytearray):
        raise RunFailure("error", f"artifact must be bytes in one of {SAFE_FORMATS} (got {result.artifact_format!r})")
    metrics = _check_metrics(result.metrics)
    (workdir / "artifact").write_bytes(bytes(result.artifact))

    names = result.feature_names
    message: dict[str, Any] = {
        "type": "result",
        "metrics": metrics,
        "artifact_path": "artifact",
        "artifact_format": result.artifact_format,
        "profile_path": None,
        "profile_error": None,
        "signature": result.signature or [{"name": n, "type": "float"} for n in (names or [])],
        "environment": environment(),
    }
    if result.profile_features is not None:
        from vigil.trainer.profiling import reference_profile_dict

        try:
            profile = reference_profile_dict(
                result.profile_features,
                names,
                calibration_scores=result.calibration_scores,
                calibration_labels=result.calibration_labels,
                decision_threshold=result.decision_threshold,
            )
        except MemoryError:
            raise
        except Exception as exc:  # a profile failure is reported, not fatal: the model itself is fine
            traceback.print_exc()
            message["profile_error"] = f"{type(exc).__name__}: {exc}"[:1000]
        else:
            (workdir / "profile.json").write_text(json.dumps(profile, allow_nan=False, separators=(",", ":")))
            message["profile_path"] = "profile.json"
    return message


def main(argv: list[str]) -> NoReturn:
    spec = json.loads(Path(argv[1]).read_text())
    confined = CONFINED_FLAG in argv[2:]
    # Confined (stage 2), our parent is the sandbox's stage 1, outside our pid namespace (getppid() reads 0 there).
    die_with_parent(None if confined else spec.get("parent_pid"))
    if spec.get("sandbox") and not confined:
        confine(spec, argv[1])  # never returns: forks into the namespaces, drops privileges, execs us again
    # The protocol keeps the original stdout; fd 1 (print, C extensions) now goes to the captured log.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        limit_resources(spec.get("memory_limit_mb"))
        message = run(spec, proto)
        code = EXIT_OK
    except RunFailure as exc:
        message, code = {"type": "failed", "reason": exc.reason, "error": str(exc)[:1000]}, EXIT_FAILED
    except MemoryError:
        traceback.print_exc()
        limit = spec.get("memory_limit_mb")
        message = {"type": "failed", "reason": "memory", "error": f"MemoryError: exceeded the {limit} MB limit"}
        code = EXIT_FAILED
    except BaseException as exc:
        traceback.print_exc()
        message, code = (
            {"type": "failed", "reason": "error", "error": f"{type(exc).__name__}: {exc}"[:1000]},
            EXIT_FAILED,
        )
    try:
        proto.write(protocol_line(message))
        proto.flush()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    if code != EXIT_OK:
        shutil.rmtree(Path(spec["workdir"]) / "data", ignore_errors=True)
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv)
