"""Secrets written by the embedded stack appear whole or not at all, once (issue #20).

``vigil.service.secret_file.publish_secret_once`` and the three places that publish a secret through it: the admin
token (``vigil.stack.credentials.write_secret_once``), the Postgres superuser password
(``vigil.stack.postgres._read_or_make_secret``) and the auditor's generated signing key (``load_signer``). They once
created the target with ``O_EXCL`` and then wrote it, so a concurrent reader could read it empty.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from vigil.auditor.signing import load_signer
from vigil.service.secret_file import Published, publish_secret_once
from vigil.stack.credentials import write_secret_once
from vigil.stack.postgres import _read_or_make_secret

pytestmark = pytest.mark.unit

SECRET = "s3cret-" + "x" * 40 + "\n"

# Each way a secret gets published, called on a path that does not exist yet.
PUBLISHERS: dict[str, Callable[[Path], object]] = {
    "publish_secret_once": lambda path: publish_secret_once(path, SECRET),
    "credentials.write_secret_once": lambda path: write_secret_once(path, SECRET),
    "postgres._read_or_make_secret": _read_or_make_secret,
    "auditor.load_signer": lambda path: load_signer(None, path),
}


def _leftovers(directory: Path, target: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p != target)


class _WriteSpy:
    """A file object that records, at every write, whether the target name exists already."""

    def __init__(self, inner: Any, seen: list[bool], target: Path) -> None:
        self._inner, self._seen, self._target = inner, seen, target

    def write(self, data: Any) -> int:
        self._seen.append(self._target.exists())
        return int(self._inner.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __enter__(self) -> _WriteSpy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()


@pytest.mark.parametrize("publish", PUBLISHERS.values(), ids=PUBLISHERS.keys())
def test_target_does_not_exist_while_the_secret_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, publish: Callable[[Path], object]
) -> None:
    """Whenever the secret's bytes are being written, the target name is not there yet: a reader finds the whole
    secret or no file, never an empty or partial one (the old create-with-O_EXCL-then-write code fails here)."""
    target = tmp_path / "keys" / "secret"
    seen: list[bool] = []
    real_fdopen, real_write = os.fdopen, os.write

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> _WriteSpy:
        return _WriteSpy(real_fdopen(fd, *args, **kwargs), seen, target)

    def write(fd: int, data: Any) -> int:
        seen.append(target.exists())
        return real_write(fd, data)

    monkeypatch.setattr(os, "fdopen", fdopen)
    monkeypatch.setattr(os, "write", write)
    publish(target)
    monkeypatch.undo()
    assert seen, "the secret was written by neither os.fdopen(...).write nor os.write: update this test's spies"
    assert not any(seen), "the target existed while its content was still being written"
    assert target.read_text().strip()
    assert _leftovers(target.parent, target) == []


@pytest.fixture
def all_reach_fsync_together(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Make writers meet before anyone links: each waits, after writing its scratch file and before its fsync
    returns, until ``parties`` writers have got there. Then every link races with every other, every time."""
    real_fsync = os.fsync
    barrier: list[threading.Barrier] = []

    def fsync(fd: int) -> None:
        real_fsync(fd)
        if barrier and stat.S_ISREG(os.fstat(fd).st_mode):  # the scratch file, not the directory
            barrier[0].wait(timeout=120)  # a guard against a hang, not a timing assertion

    def arm(parties: int) -> None:
        barrier[:] = [threading.Barrier(parties)]

    monkeypatch.setattr(os, "fsync", fsync)
    return arm


def test_concurrent_writers_one_wins_all_agree(tmp_path: Path, all_reach_fsync_together: Callable[[int], None]) -> None:
    """Writers racing on one path, each with its own secret: exactly one is written, every writer gets that one
    back, the file holds it, and no scratch file is left behind."""
    writers = 6
    for round_ in range(10):
        target = tmp_path / f"round-{round_}" / "secret"
        all_reach_fsync_together(writers)
        with ThreadPoolExecutor(writers) as pool:
            results = list(pool.map(publish_secret_once, [target] * writers, [f"secret-{i}\n" for i in range(writers)]))
        assert sum(r.written for r in results) == 1
        winner = next(r.text for r in results if r.written)
        assert {r.text for r in results} == {winner}
        assert target.read_text() == winner
        assert _leftovers(target.parent, target) == []


def test_concurrent_callers_agree_on_one_secret(
    tmp_path: Path, all_reach_fsync_together: Callable[[int], None]
) -> None:
    """The same race through the callers: two starts of one stack agree on the Postgres password and the admin
    token's file, and the loser is told it lost."""
    password_file = tmp_path / "pg" / "superuser.password"
    all_reach_fsync_together(4)
    with ThreadPoolExecutor(4) as pool:
        passwords = list(pool.map(_read_or_make_secret, [password_file] * 4))
    assert len(set(passwords)) == 1 and passwords[0] == password_file.read_text().strip()
    assert _leftovers(password_file.parent, password_file) == []

    token_file = tmp_path / "home" / "admin.token"
    all_reach_fsync_together(4)
    with ThreadPoolExecutor(4) as pool:
        wrote = list(pool.map(write_secret_once, [token_file] * 4, [f"token-{i}\n" for i in range(4)]))
    assert wrote.count(True) == 1
    assert token_file.read_text() == f"token-{wrote.index(True)}\n"
    assert _leftovers(token_file.parent, token_file) == []


@pytest.mark.parametrize("publish", PUBLISHERS.values(), ids=PUBLISHERS.keys())
def test_mode_is_0600_whatever_the_umask(tmp_path: Path, publish: Callable[[Path], object]) -> None:
    target = tmp_path / "secret"
    old_umask = os.umask(0)
    try:
        publish(target)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_existing_file_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_text("theirs\n")
    assert publish_secret_once(target, "ours\n") == Published(False, "theirs\n")
    assert target.read_text() == "theirs\n"
    assert _leftovers(tmp_path, target) == []

    assert write_secret_once(target, "ours\n") is False
    assert _read_or_make_secret(target) == "theirs"
    assert target.read_text() == "theirs\n"
    assert _leftovers(tmp_path, target) == []
