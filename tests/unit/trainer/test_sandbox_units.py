"""The worker-side pieces of the training sandbox that need no subprocess: reading back what a run names (only its
own regular files inside its work directory), the operator's memory cap, the allow-listed environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vigil.trainer.sandbox import Sandbox, UnsafeOutput, child_env, read_inside

pytestmark = pytest.mark.unit


def _sandbox(cap: int | None) -> Sandbox:
    return Sandbox(None, None, 64, 64, cap)


def test_read_inside_returns_a_regular_file_of_the_work_directory(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "artifact").write_bytes(b"{}")
    assert read_inside(tmp_path, "out/artifact", 10, os.getuid()) == b"{}"


@pytest.mark.parametrize(
    ("relative", "why"),
    [
        ("/etc/passwd", "not a path inside"),
        ("../secret", "not a path inside"),
        ("a/../../secret", "not a path inside"),
        ("", "not a path inside"),
        ("link", "is a symlink"),
        ("linkdir/secret", "is not a directory"),
        ("fifo", "not a regular file"),
        ("sub", "not a regular file"),
        ("missing", "cannot be opened"),
        ("big", "larger than"),
    ],
)
def test_read_inside_refuses_what_escapes_or_is_not_a_plain_file(tmp_path: Path, relative: str, why: str) -> None:
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("key")
    (work / "link").symlink_to(outside / "secret")
    (work / "linkdir").symlink_to(outside)
    os.mkfifo(work / "fifo")  # opened without O_NONBLOCK this would hang the worker
    (work / "sub").mkdir()
    (work / "big").write_bytes(b"x" * 11)
    with pytest.raises(UnsafeOutput, match=why):
        read_inside(work, relative, 10, None)


def test_read_inside_refuses_a_file_the_run_does_not_own(tmp_path: Path) -> None:
    (tmp_path / "artifact").write_bytes(b"{}")
    with pytest.raises(UnsafeOutput, match="not the run's own file"):
        read_inside(tmp_path, "artifact", 10, os.getuid() + 1)


def test_a_request_may_lower_the_memory_limit_never_raise_it_past_the_cap() -> None:
    assert _sandbox(4096).memory_limit_mb(100_000, 2048) == 4096
    assert _sandbox(4096).memory_limit_mb(1024, 2048) == 1024
    assert _sandbox(4096).memory_limit_mb(None, 2048) == 2048
    assert _sandbox(4096).memory_limit_mb(None, None) == 4096
    assert _sandbox(None).memory_limit_mb(100_000, 2048) == 100_000


def test_the_environment_is_an_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA")  # not secret-looking by name, still not passed
    monkeypatch.setenv("VIGIL_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("PYTHONPATH", "/src")
    env = child_env(1, {"HOME": "/work/run"})
    assert "AWS_ACCESS_KEY_ID" not in env and not any(k.startswith("VIGIL_") for k in env)
    assert env["PYTHONPATH"] == "/src" and env["HOME"] == "/work/run" and env["OMP_NUM_THREADS"] == "1"
