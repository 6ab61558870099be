"""Windows that passed while the monitor was down close only after their backlog is read: each counts every row
logged in it and none of them becomes late (the watermark, docs/monitor.md).

Closing on the wall clock, the restarted monitor closed those windows at its first tick, before its consumer had
even joined its group: a black-box run saw 40–68 % of a downtime window's predictions end as late rows.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "monitor"))

from monitor_support import batch, monitor_settings, reference, registered, run_monitor, tokens_in

from support.services import eventually
from vigil.events import topics
from vigil.monitor.figures import iso

pytestmark = pytest.mark.fault

WINDOW_S = 2.0
BATCHES = 60
ROWS = 50


async def test_downtime_windows_count_every_row_and_none_late(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    # One record per poll: the backlog is read over many batches, as a large one is (the closer ticks in between).
    settings = monitor_settings(
        fresh_db, kafka_bootstrap, topic_prefix, tokens, window_s=WINDOW_S, window_grace_s=1.0, kafka_max_poll_records=1
    )
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        await mon.publish(topics.MODELS, registered("m", 1, reference()), key="m")
        await eventually(lambda: mon.fetch("SELECT 1 FROM reference_profiles"), what="reference stored")
        await eventually(
            lambda: mon.fetch("SELECT 1 FROM stream_watermarks LIMIT 1"), timeout=60, what="watermarks reported"
        )

    # The monitor is down: the gateway keeps logging in real time, a batch every 0.1 s over three windows.
    expected: Counter[str] = Counter()
    for i in range(BATCHES):
        at = datetime.now(UTC)
        event, _, _ = batch("backlog", "m", 1, "stable", at, ROWS, seed=100 + i)
        await mon.publish(topics.PREDICTIONS, event, key="backlog")
        start = int(at.timestamp() // WINDOW_S * WINDOW_S)
        expected[iso(start)] += ROWS
        await asyncio.sleep(0.1)
    settle_after = time.time() + WINDOW_S + settings.window_grace_s + 1.0

    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:

        async def every_window_closed() -> list[dict[str, int]] | None:
            rows = await mon.fetch(
                "SELECT figures->>'start' AS start, predictions, (figures->>'late_rows')::int AS late "
                "FROM windows WHERE deployment = 'backlog' AND kind = 'tumbling'"
            )
            return [dict(r) for r in rows] if len(rows) == len(expected) and time.time() > settle_after else None

        rows = await eventually(every_window_closed, timeout=90, what="every downtime window closed")
        assert {r["start"]: r["predictions"] for r in rows} == dict(expected)
        assert [r["late"] for r in rows] == [0] * len(expected)
        states = {st.start: st.late_rows for st in await mon.windows() if st.deployment == "backlog"}
        assert set(states.values()) == {0}, states
