"""Debounce windows through the real broker and Postgres: a burst of dataset versions is one job, a later version is
another, and a window open when the scheduler stops still fires after it restarts (it is a row, not a timer)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from integration.trainer.trainer_support import fake_registered, jobs, of_job, policy, publish, put_policy, read_events

from support.services import Tokens, eventually, make_tokens, running, settings_for
from vigil.events import topics
from vigil.scheduler.app import make_app
from vigil.scheduler.settings import SchedulerSettings

pytestmark = pytest.mark.integration

DEBOUNCE_S = 3.0


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return make_tokens(tmp_path)


async def test_burst_in_window_is_one_job_later_version_is_another_and_restart_loses_nothing(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tokens: Tokens
) -> None:
    settings = settings_for(
        SchedulerSettings, dsn=fresh_db, bootstrap=kafka_bootstrap, prefix=topic_prefix, tokens=tokens,
        scheduler_tick_interval_ms=100,
    )  # fmt: skip
    async with running(make_app(settings)) as scheduler:
        c = scheduler.client
        await put_policy(c, tokens, "risk", policy(["patients"], debounce_s=DEBOUNCE_S, max_concurrent=5))
        await put_policy(c, tokens, "unrelated", policy(["other"], debounce_s=0))

        # 1. Five versions of the same dataset inside the window → exactly one job, on the newest version.
        burst = await publish(kafka_bootstrap, topic_prefix, [fake_registered("patients", v) for v in range(1, 6)])

        async def one_job() -> list[dict[str, object]]:
            return await jobs(c, tokens, model="risk")

        first = (await eventually(one_job, timeout=30, what="the first job"))[0]
        assert first["trigger"] == "dataset"
        assert first["trigger_event_ids"] == [e.id for e in burst]
        assert [d["version"] for d in first["datasets"]] == [5]
        await asyncio.sleep(DEBOUNCE_S + 1)  # nothing else may come out of that window
        assert len(await jobs(c, tokens, model="risk")) == 1
        assert await jobs(c, tokens, model="unrelated") == []

        # 2. After the window: a new version → a new job.
        (late,) = await publish(kafka_bootstrap, topic_prefix, [fake_registered("patients", 6)])

        async def two_jobs() -> list[dict[str, object]]:
            found = await jobs(c, tokens, model="risk")
            return found if len(found) == 2 else []

        second = (await eventually(two_jobs, timeout=30, what="the second job"))[1]
        assert second["trigger_event_ids"] == [late.id]
        assert [d["version"] for d in second["datasets"]] == [6]

        # 3. Two more versions open a window; the scheduler stops before it is due.
        pending_window = await publish(kafka_bootstrap, topic_prefix, [fake_registered("patients", v) for v in (7, 8)])

        async def window_open() -> bool:
            row = await scheduler.runtime.pool.fetchrow(
                "SELECT signals FROM triggers WHERE model = 'risk' AND state = 'open'"
            )
            return row is not None and row["signals"] == 2

        await eventually(window_open, timeout=20, what="the open window holding both signals")

    # The scheduler is stopped; a fresh instance on the same database takes over.
    async with running(make_app(settings)) as restarted:

        async def three_jobs() -> list[dict[str, object]]:
            found = await jobs(restarted.client, tokens, model="risk")
            return found if len(found) == 3 else []

        third = (await eventually(three_jobs, timeout=30, what="the window firing after the restart"))[2]
        assert third["trigger_event_ids"] == [e.id for e in pending_window]
        assert [d["version"] for d in third["datasets"]] == [8]
        await asyncio.sleep(1.0)
        assert len(await jobs(restarted.client, tokens, model="risk")) == 3

    # Every job was announced once: created (→ pending), dispatched (→ scheduled) with one training.requested.
    events = await read_events(kafka_bootstrap, topic_prefix, topics.TRAINING)
    for j in (first, second, third):
        changes = of_job(events, str(j["id"]), "job.state_changed")
        assert [(e.data["from_state"], e.data["to_state"]) for e in changes] == [
            (None, "pending"),
            ("pending", "scheduled"),
        ]
        requested = of_job(events, str(j["id"]), "training.requested")
        assert len(requested) == 1
        assert requested[0].data["attempt"] == 1
        # The job's events descend from the dataset events that triggered it.
        assert requested[0].causationid in j["trigger_event_ids"]
