"""Two trainer instances behind one front with a scheduler (``vigil up --replicas trainer=2``); the instance holding
a running run's lease is killed with SIGKILL mid-training (issue #24 item 2).

Unlike ``test_trainer_worker_killed.py`` (where the survivor starts after the kill), both trainers run all along:
the survivor reaps the expired lease (``training.failed`` ``worker_lost``), the scheduler re-queues the job, the
survivor runs it — the job ends succeeded with exactly one ``training.completed``, two executions in all (the killed
one and the re-run), and the runs read [lost, succeeded] through the trainer's front. The pause (kill → the re-run
claimed, and kill → the job done) is measured and written to ``failover.json``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
from fault.failover_support import client, record, replica_stack
from integration.trainer.trainer_support import (
    marker_directory,
    markers,
    of_job,
    patient_dataset,
    policy,
    publish,
    read_events,
    registered,
)

from vigil.events import topics
from vigil.stack.status import stack_status
from vigil.stack.supervisor import RunningStack

pytestmark = [pytest.mark.fault]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("failover-trainer")
    with replica_stack(home, {"scheduler": 1, "trainer": 2}) as running:
        yield running


async def _until(probe, *, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = await probe()
        except httpx.TransportError:  # a connection the front gave to the killed instance: ask again
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.3)


async def test_trainer_holding_the_lease_killed_job_rerun_once_by_the_survivor(stack: RunningStack) -> None:
    marker_dir = marker_directory(stack.paths.home / "markers")  # the sandboxed run writes there
    body = patient_dataset(stack.paths.home / "data")
    params = {"sleep_s": 8, "steps": 8, "marker_dir": str(marker_dir)}
    async with client(stack, "scheduler") as scheduler, client(stack, "trainer") as trainer:
        r = await scheduler.put("/v1/policies/risk", json=policy(["patients"], params=params, max_attempts=3))
        assert r.status_code == 200, r.text
        await publish(stack.bootstrap_servers, "", [registered("patients", 1, body)])

        first = await _until(lambda: asyncio.to_thread(markers, marker_dir), timeout=90, what="the run started")
        job_id, run_id = first[0].split(".")

        async def running_run() -> dict | None:  # type: ignore[type-arg]
            runs = (await trainer.get("/v1/runs", params={"job_id": job_id})).json()["items"]
            return next((r for r in runs if r["run_id"] == run_id and r["state"] == "running"), None)

        run = await _until(running_run, timeout=30, what="the run running")
        holder_pid = int(run["worker"].split(":")[1])
        (holder,) = [s for s in stack.instances("trainer") if s.pid == holder_pid]
        (survivor,) = [s for s in stack.instances("trainer") if s is not holder]
        # vigil status names the lease holder.
        report = await asyncio.to_thread(stack_status, stack.paths.home)
        leases = {e["name"]: e.get("leases") for e in report["services"] if e["service"] == "trainer"}
        assert leases == {holder.name: [run_id], survivor.name: []}, leases
        killed_at = time.time()
        assert await asyncio.to_thread(holder.kill) == -9

        async def done() -> dict | None:  # type: ignore[type-arg]
            found = (await scheduler.get(f"/v1/jobs/{job_id}")).json()
            return found if found["state"] in {"succeeded", "failed"} else None

        job = await _until(done, timeout=180, what="the job finished")
        finished_at = time.time()
        assert job["state"] == "succeeded", job.get("last_reason")
        runs = (await trainer.get("/v1/runs", params={"job_id": job_id})).json()["items"]

    runs.sort(key=lambda r: r["attempt"])
    assert [(r["attempt"], r["state"]) for r in runs] == [(1, "lost"), (2, "succeeded")]
    assert runs[0]["failure_reason"] == "worker_lost"
    assert int(runs[1]["worker"].split(":")[1]) == survivor.pid
    assert len(markers(marker_dir)) == 2  # the killed execution and exactly one re-run
    events = await read_events(stack.bootstrap_servers, "", topics.TRAINING)
    assert [e.data["reason"] for e in of_job(events, job_id, "training.failed")] == ["worker_lost"]
    assert len(of_job(events, job_id, "training.completed")) == 1

    rerun_started = datetime.fromisoformat(runs[1]["started_at"]).timestamp() if runs[1].get("started_at") else None
    record(
        stack.paths.home,
        "trainer_lease_holder_kill",
        {
            "lease_s": 3.0,
            "kill_to_rerun_started_s": round(rerun_started - killed_at, 3) if rerun_started else -1.0,
            "kill_to_job_succeeded_s": round(finished_at - killed_at, 3),
            "run_sleep_s": params["sleep_s"],
        },
    )
