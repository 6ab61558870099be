"""The worker's side of the training sandbox: who user code runs as, where, with what; and reading back its output.

User training code is the least trusted code the trainer runs: a scientist's policy names it, and the trainer holds
the database URL, the artifact keyring and (in the embedded stack) a home with ``admin.token`` and the auditor's
signing key. So, when the trainer is root (the embedded stack and the container image), each run gets:

- a dedicated unprivileged uid (``trainer_sandbox_user``, default ``vigil-sandbox``, created with ``useradd
  --system`` if missing; a number is used as a uid without a passwd entry) — different from the trainer's, so
  ``/proc/<trainer>/environ`` and every 0600/0700 file of the stack are out of reach, and ``RLIMIT_NPROC`` (which
  counts per uid) bounds the run instead of the trainer;
- a fresh work directory it owns (0700) inside a work base it cannot list or write (0711, owned by the trainer);
- a clean environment (:func:`child_env`): PATH, PYTHONPATH, the venv, locale, thread counts, HOME/TMPDIR in the
  work directory, a private copy of the numba cache — nothing else;
- network, pid and mount namespaces, limits and ``PR_SET_NO_NEW_PRIVS``, applied by the runner itself before any
  user code is imported (:mod:`vigil.trainer.confine`).

The trainer also makes itself non-dumpable (``PR_SET_DUMPABLE 0``), which keeps even a same-uid process out of its
``/proc/<pid>/environ`` and memory. Not root: no uid can be changed; the run gets what the runner can still do
(a user namespace for the network, the limits), and both the trainer's log and every run's log say DEGRADED.

What the run hands back is only read through :func:`read_inside`: a path relative to the work directory, with no
symlink on the way, to a regular file the sandbox uid owns — the worker is the privileged side and must not become
the sandbox's way to read the keyring.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import pwd
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.trainer.confine import PR_SET_DUMPABLE, ConfineError, prctl

log = logging.getLogger(__name__)

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
#: The only variables of the trainer's environment a run inherits; everything else (database URLs, tokens, keys,
#: cloud credentials, whatever an operator exported) stays behind.
_PASSED_ENV = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


class UnsafeOutput(Exception):
    """A path the run handed back escapes its work directory, is a symlink, or is not its own regular file."""


def child_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The runner's environment: an allow-list of ours, thread counts pinned, then ``extra``."""
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    env.setdefault("PATH", os.defpath)
    for var in _THREAD_VARS:
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _grant_traverse(path: Path) -> None:
    """Let other uids *reach* ``path`` (o+x on its ancestors that lack it; never read or write) — how the sandbox
    uid gets to its work directory and to an interpreter installed under e.g. ``/root/.pyenv``."""
    for ancestor in [path, *path.parents][1:]:
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.warning("adding o+x to %s so the training sandbox can reach %s", ancestor, path)
            ancestor.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _sandbox_user(name: str) -> tuple[int, int]:
    """(uid, gid) of the sandbox user: a number as is (no passwd entry needed), else the user, created if absent."""
    if name.isdigit():
        return int(name), int(name)
    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    error = ""
    for attempt in range(5):  # trainers starting at once race for /etc/passwd's lock: the loser tries again
        created = subprocess.run(
            [useradd, "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
        error = created.stderr.strip()
        time.sleep(0.2 * (attempt + 1))
    raise ConfineError(0, f"cannot create the sandbox user {name}: {error}")


@dataclass(frozen=True)
class Sandbox:
    """How this trainer confines its runs; ``degraded`` says why it cannot fully (then ``uid`` is None)."""

    uid: int | None
    gid: int | None
    max_processes: int
    max_file_mb: int
    memory_cap_mb: int | None
    degraded: str | None = None

    def memory_limit_mb(self, requested: int | None, default: int | None) -> int | None:
        """The run's address-space limit: the request's or the default, never above the operator's cap."""
        wanted = requested if requested is not None else default
        if self.memory_cap_mb is None:
            return wanted
        return self.memory_cap_mb if wanted is None else min(wanted, self.memory_cap_mb)

    def spec(self, memory_limit_mb: int | None, timeout_s: float, threads: int) -> dict[str, Any]:
        """What the runner needs to confine itself (``spec["sandbox"]``)."""
        return {
            "uid": self.uid,
            "gid": self.gid,
            # RLIMIT_NPROC counts every process and thread of the uid: with the trainer's own uid (degraded) that
            # includes the trainer and, in an embedded stack, every service — no sane bound for the run alone.
            "max_processes": self.max_processes if self.uid is not None else None,
            "max_file_mb": self.max_file_mb,
            # CPU seconds: the wall-clock timeout for every thread the run may use, plus slack for start-up.
            "cpu_s": math.ceil(timeout_s * max(1, threads)) + 30,
            "memory_limit_mb": memory_limit_mb,
            "why_degraded": self.degraded,
        }

    def make_workdir(self, workdir: Path) -> None:
        """A fresh directory for one run (a leftover of a crashed run is removed first)."""
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(mode=0o700, parents=True)

    def hand_over(self, workdir: Path, numba_cache: str | None) -> dict[str, str]:
        """Seed the run's private numba cache, give the sandbox uid the work directory; returns the env extras."""
        (workdir / "tmp").mkdir(exist_ok=True)
        cache = workdir / ".numba-cache"
        if numba_cache and Path(numba_cache).is_dir():
            # A private copy: kernels compiled by the trainer load at once, and nothing a run writes reaches the
            # next one (the numba cache is pickled code).
            shutil.copytree(numba_cache, cache, symlinks=False, dirs_exist_ok=True)
        else:
            cache.mkdir(exist_ok=True)
        if self.uid is not None:
            gid = self.gid if self.gid is not None else self.uid
            for root, dirs, files in os.walk(workdir):
                os.chown(root, self.uid, gid)
                for name in dirs + files:
                    os.lchown(os.path.join(root, name), self.uid, gid)
        return {
            "HOME": str(workdir),
            "TMPDIR": str(workdir / "tmp"),
            "NUMBA_CACHE_DIR": str(cache),
            "PYTHONDONTWRITEBYTECODE": "1",
        }


def warm_numba_cache() -> None:
    """Compile (or load) the reference-profile kernels once in the trainer, into the trainer's numba cache, which
    every run gets a private copy of. Without this, on a fresh machine every sandboxed run would compile them
    cold (≈7 s of CPU here): a run may not write the shared cache — numba's cache is pickled code that the next
    reader executes — so what a run compiles dies with it."""
    try:
        import numpy as np

        from vigil.trainer.profiling import reference_profile_dict

        reference_profile_dict(np.linspace(0.0, 1.0, 64).reshape(16, 4), ["a", "b", "c", "d"])
    except Exception:  # a cold cache only costs time
        log.warning("could not warm the numba cache for training runs", exc_info=True)


def prepare(
    *,
    enabled: bool,
    user: str,
    work_dir: Path,
    python: str,
    max_processes: int,
    max_file_mb: int,
    memory_cap_mb: int | None,
) -> Sandbox:
    """Set the sandbox up once per trainer process: the uid, reachable paths, the trainer non-dumpable."""
    try:
        prctl(PR_SET_DUMPABLE, 0)  # no same-uid process may read our environ or memory, nor ptrace us
    except (ConfineError, AttributeError) as exc:
        log.warning("could not make the trainer non-dumpable: %s", exc)
    work_dir.mkdir(parents=True, exist_ok=True)
    if not enabled:
        why = "trainer_sandbox is off"
    elif os.geteuid() != 0:
        why = f"the trainer is not root (uid {os.geteuid()}), so runs keep its uid"
    else:
        try:
            uid, gid = _sandbox_user(user)
            if uid == 0:
                raise ConfineError(0, f"sandbox user {user} is root")
            work_dir.chmod(0o711)  # the sandbox reaches its own directory, cannot list or write the base
            _grant_traverse(work_dir / "x")
            for needed in {Path(os.path.realpath(python)), Path(os.path.realpath(sys.prefix)) / "x",
                           Path(os.path.realpath(sys.base_prefix)) / "x"}:  # fmt: skip
                _grant_traverse(needed)
        except OSError as exc:
            why = f"sandbox setup failed: {exc}"
        else:
            log.info("training sandbox: runs execute as uid %d (%s), no network", uid, user)
            return Sandbox(uid, gid, max_processes, max_file_mb, memory_cap_mb)
    log.warning(
        "TRAINING SANDBOX DEGRADED: %s. User training code will run with the trainer's uid: it can read what the "
        "trainer can read (keys, tokens in its home) unless the file modes say otherwise. Run the trainer as root "
        "(it drops to %s per run) for the full sandbox.",
        why,
        user,
    )
    return Sandbox(None, None, max_processes, max_file_mb, memory_cap_mb, degraded=why)


def read_inside(workdir: Path, relative: str, max_bytes: int, owner: int | None) -> bytes:
    """The bytes of a file the run names, refusing anything outside ``workdir``, any symlink on the way, anything
    not a regular file (a FIFO would block us) or, when the run had its own uid, a file it does not own (a hard link
    to someone else's file)."""
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise UnsafeOutput(f"output path {relative[:200]!r} is not a path inside the run's work directory")
    fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in rel.parts[:-1]:
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise UnsafeOutput(f"output path {relative[:200]!r}: {part!r} is not a directory: {exc}") from exc
            os.close(fd)
            fd = nxt
        try:
            leaf = os.open(rel.parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeOutput(f"output path {relative[:200]!r} is a symlink") from exc
            raise UnsafeOutput(f"output path {relative[:200]!r} cannot be opened: {exc}") from exc
    finally:
        os.close(fd)
    info = os.fstat(leaf)
    if not stat.S_ISREG(info.st_mode):
        os.close(leaf)
        raise UnsafeOutput(f"output path {relative[:200]!r} is not a regular file")
    with os.fdopen(leaf, "rb") as fh:
        if owner is not None and info.st_uid != owner:
            raise UnsafeOutput(f"output path {relative[:200]!r} is not the run's own file (owner {info.st_uid})")
        if info.st_size > max_bytes:
            raise UnsafeOutput(f"output {relative[:200]!r} is larger than {max_bytes} bytes")
        return fh.read(max_bytes + 1)[:max_bytes]
