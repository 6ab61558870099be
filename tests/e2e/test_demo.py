"""``vigil demo --fast`` end to end, as a user runs it: real processes, embedded broker and Postgres."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_fast_reaches_the_end_of_the_story(tmp_path: Path) -> None:
    env = {**os.environ, "VIGIL_HOME": str(tmp_path / "home"), "VIGIL_POSTGRES_FSYNC": "off", "COLUMNS": "160"}
    env.pop("DATABASE_URL", None)  # the demo must stand on the embedded stack alone
    env.pop("VIGIL_DATABASE_URL", None)
    vigil = Path(sys.executable).with_name("vigil")
    result = subprocess.run(
        [str(vigil), "demo", "--fast", "--free-ports"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "demo complete" in output
    assert "verified ✓" in output
    assert "chain complete back to the upstream event: True" in output
    # The stack is gone afterwards: nothing left listening under this home.
    status = subprocess.run(
        [str(vigil), "status", "--json"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert status.returncode == 1
