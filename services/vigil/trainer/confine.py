"""The runner's side of the training sandbox: what a runner does to itself before any user code is imported.

Why in the runner and not in the worker (``preexec_fn``): the worker is a multi-threaded asyncio process, where
running Python between ``fork`` and ``exec`` can deadlock; the runner is a fresh single-threaded interpreter. It
starts as the trainer's uid, so it still may create namespaces and change uid, and it has nothing secret to lose:
its environment is the clean one the worker built, its only input the spec file.

Stage 1 (``python -m vigil.trainer.confine <spec>``, what the worker starts — or the runner, started by hand — as
the trainer's uid, :func:`confine`):

1. ``unshare(CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS)`` — a network namespace with only a loopback that is down
   (any connect, 127.0.0.1 included, fails), a pid namespace (its first child is init there: when it exits, the
   kernel kills everything left in it, also children that left the process group with ``setsid``) and a mount
   namespace;
2. ``fork``; stage 1 waits and exits as its child did (same code, or killed by the same signal).

Stage 2 (the child, pid 1 of the new pid namespace, :func:`_enter_child`):

3. mounts: ``/`` made private (nothing leaks back), a fresh ``/proc`` that shows only the sandbox's processes,
   private ``tmpfs`` on ``/dev/shm`` and (when the work directory is not below them) ``/tmp`` and ``/var/tmp``;
4. limits, hard and soft (an unprivileged process cannot raise a hard limit): ``RLIMIT_NPROC`` (per uid, hence the
   dedicated uid), ``RLIMIT_CPU``, ``RLIMIT_FSIZE``, ``RLIMIT_AS``, no core dumps;
5. ``setgroups([])``, ``setresgid``, ``setresuid`` to the sandbox uid (drops every capability),
   ``PR_SET_NO_NEW_PRIVS`` (no set-uid binary can give them back), then ``exec`` of the runner again with
   ``--confined``, which trains.

Not root: no uid change is possible. Stage 1 then tries an unprivileged user namespace (same uid mapped) for the
network/pid/mount namespaces; where even that is refused only the limits apply. Either way the first line of the
run's log says what isolation the run got (``sandbox: …`` or ``sandbox DEGRADED: …``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import select
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_REC, MS_PRIVATE = 0x4000, 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
CONFINED_FLAG = "--confined"
#: Exit code of stage 2 when it could not confine itself (nothing of the user's ran).
EXIT_CONFINE_FAILED = 97


class ConfineError(OSError):
    """A step of the confinement failed (the run fails with the step named; nothing of the user's ran)."""


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _call(name: str, *args: Any) -> None:
    libc = _libc()
    if getattr(libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise ConfineError(errno, f"{name}: {os.strerror(errno)}")


def prctl(option: int, value: int) -> None:
    _call("prctl", option, value, 0, 0, 0)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    libc = _libc()
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    if libc.mount(enc[0], enc[1], enc[2], flags, enc[3]) != 0:
        errno = ctypes.get_errno()
        raise ConfineError(errno, f"mount {target}: {os.strerror(errno)}")


def say(line: str) -> None:
    """One line into the run's captured log (stderr is the log stream)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _set_limits(cfg: dict[str, Any]) -> list[str]:
    """Hard = soft for every limit but CPU (soft first: SIGXCPU, then SIGKILL at the hard one)."""
    done = []
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if cfg.get("max_processes"):
        n = int(cfg["max_processes"])
        resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
        done.append(f"processes {n}")
    if cfg.get("cpu_s"):
        n = int(cfg["cpu_s"])
        resource.setrlimit(resource.RLIMIT_CPU, (n, n + 5))
        done.append(f"cpu {n}s")
    if cfg.get("max_file_mb"):
        n = int(cfg["max_file_mb"]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
        done.append(f"file size {cfg['max_file_mb']} MB")
    if cfg.get("memory_limit_mb"):
        n = int(cfg["memory_limit_mb"]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (n, n))
        done.append(f"address space {cfg['memory_limit_mb']} MB")
    return done


def _below(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _private_mounts(workdir: str) -> list[str]:
    """A private copy of the mount tree: fresh /proc (this pid namespace only), private tmpfs where others write."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    done = ["/proc"]
    for shared in ("/dev/shm", "/tmp", "/var/tmp"):
        if os.path.isdir(shared) and not _below(os.path.realpath(workdir), os.path.realpath(shared)):
            _mount("tmpfs", shared, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=268435456")
            done.append(shared)
    return done


def _exec_confined(spec_path: str) -> NoReturn:
    os.execv(sys.executable, [sys.executable, "-m", "vigil.trainer.runner", spec_path, CONFINED_FLAG])


def _enter_child(cfg: dict[str, Any], workdir: str, spec_path: str, notes: list[str], parent_alive: int) -> NoReturn:
    """Stage 2, pid 1 of the new namespaces: mounts, limits, uid, exec. Never returns; exits 97 on failure.

    ``parent_alive`` is the read end of a pipe whose write end only stage 1 holds: readable (EOF) once stage 1 is
    gone — the check that closes the window before our own parent-death signal was set."""
    try:
        if cfg.get("namespaces"):
            mounts = _private_mounts(workdir)
            notes.append("private " + ", ".join(mounts))
        notes.extend(_set_limits(cfg))
        uid, gid = cfg.get("uid"), cfg.get("gid")
        if uid is not None and os.geteuid() == 0:
            gid = int(gid) if gid is not None else int(uid)
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(int(uid), int(uid), int(uid))
            if os.geteuid() == 0 or os.getuid() == 0:
                raise ConfineError(0, "still root after setresuid")
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        # Die with stage 1 (and so with the worker). Set after the uid change, which clears it; kept across exec.
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if select.select([parent_alive], [], [], 0)[0]:
            os._exit(EXIT_CONFINE_FAILED)  # stage 1 died before the signal was armed: nobody would stop us
        os.chdir(workdir)
        say(("sandbox DEGRADED: " if cfg.get("degraded") else "sandbox: ") + "; ".join(notes))
        _exec_confined(spec_path)
    except BaseException as exc:  # nothing of the user's has run: say why and fail
        say(f"sandbox: could not confine the run: {exc}")
        os._exit(EXIT_CONFINE_FAILED)


def _exit_like(status: int) -> NoReturn:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # only if the signal was not fatal
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _unshare(cfg: dict[str, Any], notes: list[str]) -> bool:
    """New net/pid/mount namespaces; as non-root through a user namespace mapping our own uid. True if made;
    False (with a note saying so) where the kernel or a container refuses them."""
    flags = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS
    if os.geteuid() == 0:
        try:
            _call("unshare", flags)
        except OSError as exc:  # root without CAP_SYS_ADMIN (a container): the uid still changes, the network not
            notes.append(f"network NOT isolated, no pid/mount namespace (unshare refused: {exc})")
            return False
        notes.append("network none (own network namespace)")
        notes.append("own pid and mount namespaces")
        return True
    uid, gid = os.geteuid(), os.getegid()
    try:
        _call("unshare", flags | CLONE_NEWUSER)
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    except OSError as exc:
        notes.append(f"network NOT isolated, no pid/mount namespace (user namespace refused: {exc})")
        return False
    notes.append("network none (user + network namespace)")
    notes.append("own pid and mount namespaces")
    return True


def confine(spec: dict[str, Any], spec_path: str) -> NoReturn:
    """Stage 1: namespaces, fork, wait, exit like the child. Only returns into stage 2 by ``exec``."""
    cfg = dict(spec["sandbox"])
    notes: list[str] = []
    if cfg.get("uid") is not None and os.geteuid() == 0:
        notes.append(f"uid {cfg['uid']} gid {cfg.get('gid')}")
    else:
        cfg["degraded"] = True
        notes.append(f"same uid as the trainer ({os.geteuid()}): {cfg.get('why_degraded') or 'not root'}")
    cfg["namespaces"] = _unshare(cfg, notes)
    if not cfg["namespaces"]:
        cfg["degraded"] = True
    sys.stdout.flush()
    sys.stderr.flush()
    alive_r, alive_w = os.pipe()  # not inherited across exec; the write end lives as long as stage 1
    pid = os.fork()
    if pid == 0:
        os.close(alive_w)
        _enter_child(cfg, spec["workdir"], spec_path, notes, alive_r)
    os.close(alive_r)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    _exit_like(status)


def main(argv: list[str]) -> NoReturn:
    """``python -m vigil.trainer.confine <spec.json>``: stage 1 without the runner's imports (≈1 s of pydantic and
    friends that stage 2 loads anyway); what the worker starts. The runner does the same when started by hand."""
    import json

    spec = json.loads(Path(argv[1]).read_text())
    with contextlib.suppress(OSError):
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the worker
    parent = spec.get("parent_pid")
    if parent is not None and os.getppid() != parent:
        os._exit(EXIT_CONFINE_FAILED)
    confine(spec, argv[1])


if __name__ == "__main__":
    main(sys.argv)
