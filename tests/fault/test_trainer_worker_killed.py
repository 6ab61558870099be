"""A trainer process is SIGKILLed mid-run. Its training subprocess dies with it (no orphan), the run's lease expires,
another trainer reaps it (``training.failed``, ``worker_lost``), the scheduler re-queues the job, and the job runs
once more — exactly one ``training.completed``, one succeeded run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
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
    wait_job,
)

from support.services import Tokens, eventually, make_tokens, running, settings_for
from vigil.events import topics
from vigil.scheduler.app import make_app as make_scheduler
from vigil.scheduler.settings import SchedulerSettings
from vigil.trainer.app import make_app as make_trainer
from vigil.trainer.settings import TrainerSettings

pytestmark = pytest.mark.fault


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _runner_pids(run_id: str) -> list[int]:
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "vigil.trainer.runner" in cmdline and any(run_id in part for part in cmdline):
            pids.append(proc.pid)
    return pids


async def test_trainer_process_killed_mid_run_job_reaped_and_rerun_once(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    common = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    marker_dir = marker_directory(tmp_path / "markers")
    body = patient_dataset(tmp_path / "data")
    env = {
        **os.environ,
        "VIGIL_DATABASE_URL": fresh_db,
        "VIGIL_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "VIGIL_KAFKA_TOPIC_PREFIX": topic_prefix,
        "VIGIL_KAFKA_GROUP_PREFIX": topic_prefix,
        "VIGIL_KAFKA_TOPIC_PARTITIONS": "2",
        "VIGIL_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "VIGIL_TOKENS_FILE": str(tokens.file),
        "VIGIL_HOME": str(tmp_path / "doomed"),
        "VIGIL_ARTIFACT_ROOT": str(tmp_path / "doomed" / "artifacts"),
        "VIGIL_TRAINER_DATASET_ROOTS": json.dumps([str(tmp_path / "data")]),
        "VIGIL_TRAINER_LEASE_S": "3",
        "VIGIL_TRAINER_POLL_INTERVAL_MS": "200",
        "VIGIL_HTTP_PORT": str(_free_port()),
        "VIGIL_ENVIRONMENT": "test",
    }
    async with running(
        make_scheduler(settings_for(SchedulerSettings, **common, scheduler_tick_interval_ms=100))
    ) as sched:
        # Only the doomed trainer (a real OS process) is up when the job is dispatched, so it takes the run.
        doomed = subprocess.Popen(  # noqa: ASYNC220 - a real OS process we SIGKILL; started once, not awaited
            [sys.executable, "-m", "vigil.trainer"], env=env, stdout=subprocess.DEVNULL
        )
        try:
            await put_policy(
                sched.client, tokens, "risk",
                policy(["patients"], params={"sleep_s": 6, "steps": 6, "marker_dir": str(marker_dir)}, max_attempts=3),
            )  # fmt: skip
            await publish(kafka_bootstrap, topic_prefix, [registered("patients", 1, body)])
            (first,) = await eventually(lambda: asyncio.to_thread(markers, marker_dir), timeout=60, what="run started")
            job_id, run_id = first.split(".")
            assert _runner_pids(run_id), "the doomed trainer's runner subprocess should be running"
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(timeout=10)
        finally:
            if doomed.poll() is None:
                doomed.kill()
                doomed.wait()

        # The runner died with its worker (PR_SET_PDEATHSIG): no orphan keeps training.
        await eventually(lambda: asyncio.to_thread(lambda: not _runner_pids(run_id)), timeout=10, what="no orphan")
        assert len(markers(marker_dir)) == 1

        # A surviving trainer reaps the expired lease; the scheduler re-queues; the job runs once more.
        async with running(
            make_trainer(trainer_settings(TrainerSettings, tmp_path / "survivor", **common))
        ) as survivor:
            done = await wait_job(sched.client, tokens, job_id, {"succeeded", "failed"}, timeout=90)
            assert done["state"] == "succeeded", done["last_reason"]
            viewer = tokens.headers("viewer")
            runs = (await survivor.client.get("/v1/runs", params={"job_id": job_id}, headers=viewer)).json()["items"]
            assert [(r["attempt"], r["state"]) for r in runs] == [(1, "lost"), (2, "succeeded")]
            assert runs[0]["failure_reason"] == "worker_lost"
            assert runs[1]["worker"].startswith(socket.gethostname())
            await asyncio.sleep(1.0)

    assert len(markers(marker_dir)) == 2  # the killed execution and exactly one re-run
    events = await read_events(kafka_bootstrap, topic_prefix, topics.TRAINING)
    assert [e.data["reason"] for e in of_job(events, job_id, "training.failed")] == ["worker_lost"]
    assert len(of_job(events, job_id, "training.completed")) == 1
    changes = [(e.data["from_state"], e.data["to_state"]) for e in of_job(events, job_id, "job.state_changed")]
    assert changes == [
        (None, "pending"),
        ("pending", "scheduled"),
        ("scheduled", "running"),
        ("running", "pending"),
        ("pending", "scheduled"),
        ("scheduled", "running"),
        ("running", "succeeded"),
    ]
