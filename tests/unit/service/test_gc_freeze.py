"""A service process freezes its start-up heap (full passes stop walking the imports' objects) and collects its
young generation less often (a polled batch is not scanned a dozen times before it dies)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

# In a child process: freezing is process-wide and would change this test session's collector.
CHILD = """
import gc
import vigil.service.app as app
before = len(gc.get_objects())
assert gc.get_threshold() == (700, 10, 10)
frozen = app.freeze_startup_heap()
assert gc.get_freeze_count() == frozen, (gc.get_freeze_count(), frozen)
assert frozen >= before * 0.9, (frozen, before)
assert len(gc.get_objects()) < before * 0.1, "frozen objects must leave the collected generations"
assert gc.get_threshold()[0] == app.YOUNG_GENERATION_THRESHOLD, gc.get_threshold()
assert gc.get_threshold()[1:] == (10, 10), "the older generations keep CPython's defaults"
print(frozen)
"""


def test_freeze_startup_heap_moves_the_live_heap_out_of_collection() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 10_000  # fastapi, pydantic, asyncpg, aiokafka, opentelemetry are imported


def test_only_the_process_entry_point_asks_for_it() -> None:
    """Tests build apps in-process with ``create_app``: they must not freeze the test session's heap."""
    import inspect

    from vigil.service import app

    assert inspect.signature(app.create_app).parameters["freeze_gc_after_start"].default is False
    assert "freeze_gc_after_start=True" in inspect.getsource(app.run)
