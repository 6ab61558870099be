"""Two scheduler instances behind one front, with one trainer; the scheduler instance owning a partition of
``vigil.data`` is killed with SIGKILL while dataset versions are announced (issue #24 item 2).

Six models each watch a dataset of their own; three datasets are announced before the kill and three after. The
partition moves to the survivor, which catches up: each model gets exactly one job, every job runs once and
succeeds (one ``training.completed`` each) — no job lost with the killed instance, none created twice by the
redelivery of an announcement the victim had applied but not committed. Pause figures go to ``failover.json``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from fault.failover_support import assigned_partitions, client, pause_figures, record, replica_stack
from integration.trainer.trainer_support import (
    fake_registered,
    marker_directory,
    of_job,
    patient_dataset,
    policy,
    publish,
    read_events,
    registered,
)

from vigil.events import topics
from vigil.stack.supervisor import RunningStack

pytestmark = [pytest.mark.fault]

MODELS = 6


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("failover-scheduler")
    with replica_stack(home, {"scheduler": 2, "trainer": 1}) as running:
        yield running


async def _jobs(scheduler: httpx.AsyncClient) -> list[dict[str, Any]]:
    for attempt in range(5):  # a connection the front handed to the killed instance: ask again
        try:
            r = await scheduler.get("/v1/jobs", params={"limit": 500})
            r.raise_for_status()
            items: list[dict[str, Any]] = r.json()["items"]
            return items
        except httpx.TransportError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.3)
    raise AssertionError("unreachable")


async def test_scheduler_instance_killed_while_data_arrives_each_model_trains_once(stack: RunningStack) -> None:
    bootstrap = stack.bootstrap_servers
    params = {"sleep_s": 0.2, "steps": 1}
    data_dir = marker_directory(stack.paths.home / "data")  # reachable by the sandboxed run's uid
    async with client(stack, "scheduler") as scheduler:
        for i in range(MODELS):
            r = await scheduler.put(f"/v1/policies/fo-m{i}", json=policy([f"fo-d{i}"], params=params))
            assert r.status_code == 200, r.text
        # Warm-up on datasets no policy watches (each a different key, so records reach every partition) until both
        # instances have consumed from partitions of their own: an instance shows a partition only once a record
        # arrived on it after the group settled, so waiting for scheduler-2 alone could leave scheduler-1 unseen.
        for i in range(120):
            await publish(bootstrap, "", [fake_registered(f"fo-warm-{i}", 1)])
            await asyncio.sleep(0.25)
            owned = [await assigned_partitions(stack, f"scheduler-{n}", topics.DATA) for n in (1, 2)]
            if all(owned):
                break
        assert await assigned_partitions(stack, "scheduler-2", topics.DATA), "scheduler-2 never got a partition"
        victim_partitions = await assigned_partitions(stack, "scheduler-1", topics.DATA)
        assert victim_partitions, "scheduler-1 owns no partition of vigil.data: the kill would move nothing"

        sent: dict[str, float] = {}  # model → wall time its dataset was announced
        killed_at = 0.0
        for i in range(MODELS):
            if i == MODELS // 2:
                assert await asyncio.to_thread(stack.kill_service, "scheduler-1") == -9
                killed_at = time.time()
            body = patient_dataset(data_dir, seed=i)
            sent[f"fo-m{i}"] = time.time()
            await publish(bootstrap, "", [registered(f"fo-d{i}", 1, body)])

        deadline = time.monotonic() + 180
        while True:
            ours = [j for j in await _jobs(scheduler) if j["model"] in sent]
            if len(ours) >= MODELS and all(j["state"] in {"succeeded", "failed", "cancelled"} for j in ours):
                break
            assert time.monotonic() < deadline, f"jobs not done: {[(j['model'], j['state']) for j in ours]}"
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)  # a duplicate job from a redelivered announcement would show up by now
        ours = [j for j in await _jobs(scheduler) if j["model"] in sent]

    assert Counter(j["model"] for j in ours) == Counter(dict.fromkeys(sent, 1)), "a model without or with two jobs"
    assert {j["state"] for j in ours} == {"succeeded"}, [(j["model"], j["state"], j["last_reason"]) for j in ours]
    events = await read_events(bootstrap, "", topics.TRAINING)
    for job in ours:
        assert len(of_job(events, job["id"], "training.completed")) == 1, job["model"]

    created = {j["model"]: datetime.fromisoformat(j["created_at"]).timestamp() for j in ours}
    lat = {m: created[m] - t for m, t in sent.items()}
    before = [v for m, v in lat.items() if sent[m] < killed_at]
    after = [v for m, v in lat.items() if sent[m] >= killed_at]
    record(
        stack.paths.home,
        "scheduler_kill",
        pause_figures(before, after) | {"moved_partitions": sorted(victim_partitions), "models": MODELS},
    )
