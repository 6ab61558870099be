"""A service's stop steps are bounded and named: a step that overruns its bound is cut short (False) and the log
line says which step it was in its message — CI shows pytest's log lines, which drop a record's extras."""

from __future__ import annotations

import asyncio
import logging

import pytest

from vigil.service import runtime
from vigil.service.runtime import timed_stop_step

pytestmark = pytest.mark.unit


async def test_a_step_past_its_bound_is_cut_short_and_named(caplog: pytest.LogCaptureFixture) -> None:
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with caplog.at_level(logging.WARNING, logger=runtime.__name__):
        assert await timed_stop_step("window closer", hangs(), timeout_s=0.05) is False
    assert cancelled.is_set()
    assert any(
        "did not finish in 0.05 s" in r.getMessage() and "window closer" in r.getMessage() for r in caplog.records
    )


async def test_a_slow_step_that_finishes_is_reported_with_its_duration(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "SLOW_STOP_STEP_S", 0.01)
    with caplog.at_level(logging.WARNING, logger=runtime.__name__):
        assert await timed_stop_step("consumer", asyncio.sleep(0.05), timeout_s=5.0) is True
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("slow stop step: consumer took 0.") and line.endswith(" s")
