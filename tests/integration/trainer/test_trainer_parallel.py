"""Two trainer processes' worth of workers (two service instances in one consumer group), ten jobs: every job runs
exactly once, and the scheduler's caps hold — at most 3 jobs at once overall, at most 1 of model ``serial``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from integration.trainer.trainer_support import (
    marker_directory,
    markers,
    of_job,
    patient_dataset,
    policy,
    publish,
    put_policy,
    read_events,
    registered,
    trainer_settings,
    trigger,
    wait_job,
)

from support.services import Tokens, eventually, make_tokens, running, settings_for
from vigil.events import topics
from vigil.scheduler.app import make_app as make_scheduler
from vigil.scheduler.settings import SchedulerSettings
from vigil.trainer.app import make_app as make_trainer
from vigil.trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration

GLOBAL_CAP = 3


def peak(intervals: list[tuple[datetime, datetime]]) -> int:
    """Largest number of intervals open at one instant (an end at t closes before a start at t)."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    best = current = 0
    for _, delta in edges:
        current += delta
        best = max(best, current)
    return best


async def test_two_trainers_ten_jobs_each_runs_once_within_caps(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    common: dict[str, Any] = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    marker_dir = marker_directory(tmp_path / "markers")
    body = patient_dataset(tmp_path / "data")
    sched_settings = settings_for(
        SchedulerSettings, **common, scheduler_tick_interval_ms=100, scheduler_max_concurrent_jobs=GLOBAL_CAP
    )
    # 2 × 2 worker slots = 4 > the global cap of 3: the scheduler's caps, not the worker count, must bound this.
    async with (
        running(make_scheduler(sched_settings)) as sched,
        running(make_trainer(trainer_settings(TrainerSettings, tmp_path / "a", **common))) as trainer_a,
        running(make_trainer(trainer_settings(TrainerSettings, tmp_path / "b", **common))),
    ):
        params = {"sleep_s": 1.5, "steps": 3, "marker_dir": str(marker_dir)}
        await put_policy(sched.client, tokens, "serial", policy(["patients"], params=params, max_concurrent=1))
        await put_policy(sched.client, tokens, "wide", policy(["patients"], params=params, max_concurrent=3))
        await publish(kafka_bootstrap, topic_prefix, [registered("patients", 1, body)])
        # debounce 0: the dataset itself makes one job per model; eight manual triggers make the other eight.
        await _jobs_count(sched.client, tokens, 2)
        for i in range(4):
            r = await trigger(sched.client, tokens, "serial", {"seed": i})
            assert r.status_code == 201, r.text
        for i in range(4):
            r = await trigger(sched.client, tokens, "wide", {"seed": i})
            assert r.status_code == 201, r.text
        finals = []
        for j in await _jobs_count(sched.client, tokens, 10):
            finals.append(await wait_job(sched.client, tokens, j["id"], {"succeeded", "failed"}, timeout=120))
        assert [f["state"] for f in finals] == ["succeeded"] * 10, [f["last_reason"] for f in finals]
        runs = (await trainer_a.client.get("/v1/runs", headers=tokens.headers("viewer"))).json()["items"]

    # Each job ran exactly once: one run, one execution of the training code, one training.completed.
    assert sorted(r["job_id"] for r in runs) == sorted(f["id"] for f in finals)
    assert all(r["state"] == "succeeded" and r["attempt"] == 1 for r in runs)
    executions = markers(marker_dir)
    assert len(executions) == 10 and len({m.split(".")[0] for m in executions}) == 10
    events = await read_events(kafka_bootstrap, topic_prefix, topics.TRAINING)
    for f in finals:
        assert len(of_job(events, f["id"], "training.completed")) == 1

    # Caps, measured on the trainers' own clocks (a run lies inside its job's scheduled → finished span).
    def spans(model: str | None) -> list[tuple[datetime, datetime]]:
        return [
            (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
            for r in runs
            if model is None or r["model"] == model
        ]

    assert peak(spans("serial")) == 1
    assert 2 <= peak(spans(None)) <= GLOBAL_CAP
    processes = {r["worker"].rsplit("/", 1)[0] for r in runs}
    assert len(processes) == 2, processes  # both trainer instances took work from the shared queue


async def _jobs_count(client: Any, tokens: Tokens, n: int) -> list[dict[str, Any]]:
    async def exactly_n() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await client.get("/v1/jobs", headers=tokens.headers("viewer"))).json()["items"]
        return items if len(items) == n else []

    return await eventually(exactly_n, what=f"{n} jobs")
