"""Scheduler + trainer through the real broker and Postgres, with real subprocess training.

The breast-cancer example end to end (dataset verified, per-step metrics streamed, JSON artifact stored and
loadable without pickle, reference profile, environment); training that raises, overruns its timeout or its memory
limit fails with that reason, is retried per policy and then fails cleanly while another job succeeds; a runner
killed mid-run is retried once and only one ``training.completed`` exists.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import orjson
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
from vigil.artifacts.store import digest_of
from vigil.events import topics
from vigil.kernels.profile import DatasetProfile
from vigil.scheduler.app import make_app as make_scheduler
from vigil.scheduler.settings import SchedulerSettings
from vigil.trainer.app import make_app as make_trainer
from vigil.trainer.examples import breast_cancer
from vigil.trainer.log_expiry import LogExpiry
from vigil.trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return make_tokens(tmp_path)


def _common(fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tokens: Tokens) -> dict[str, Any]:
    return {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}


async def test_breast_cancer_example_end_to_end(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tokens: Tokens, tmp_path: Path
) -> None:
    common = _common(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    body = breast_cancer.write_dataset(tmp_path / "data")
    async with (
        running(make_scheduler(settings_for(SchedulerSettings, **common, scheduler_tick_interval_ms=100))) as sched,
        running(make_trainer(trainer_settings(TrainerSettings, tmp_path, **common))) as trainer,
    ):
        await put_policy(
            sched.client, tokens, "breast-cancer-clf",
            policy([breast_cancer.DATASET], entrypoint="vigil.trainer.examples.breast_cancer:train",
                   params={"epochs": 200, "seed": 1}, memory_limit_mb=2048),
        )  # fmt: skip
        (announced,) = await publish(kafka_bootstrap, topic_prefix, [registered(breast_cancer.DATASET, 1, body)])

        async def the_job() -> list[dict[str, Any]]:
            r = await sched.client.get("/v1/jobs", headers=tokens.headers("viewer"))
            items: list[dict[str, Any]] = r.json()["items"]
            return items

        (job,) = await eventually(the_job, what="the job")
        done = await wait_job(sched.client, tokens, job["id"], {"succeeded", "failed"}, timeout=90)
        assert done["state"] == "succeeded", done["last_reason"]
        viewer = tokens.headers("viewer")

        (run,) = (await trainer.client.get("/v1/runs", params={"job_id": job["id"]}, headers=viewer)).json()["items"]
        assert run["state"] == "succeeded"
        assert run["metrics"]["val_auc"] > 0.97 and run["metrics"]["val_accuracy"] > 0.93
        assert run["artifact_format"] == "json" and run["environment"]["packages"]["numpy"]
        assert done["result"]["artifact_digest"] == run["artifact_digest"]

        metrics = (
            await trainer.client.get(
                f"/v1/runs/{run['run_id']}/metrics", params={"name": "train_log_loss"}, headers=viewer
            )
        ).json()["items"]
        assert [m["step"] for m in metrics] == list(range(10, 201, 10))
        assert metrics[-1]["value"] < metrics[0]["value"]  # it learned

        arts = (await trainer.client.get(f"/v1/runs/{run['run_id']}/artifacts", headers=viewer)).json()
        assert {a["kind"] for a in arts} == {"model", "reference_profile"}
        assert (
            await trainer.client.get(f"/v1/runs/{run['run_id']}/artifacts/model", headers=viewer)
        ).status_code == 403
        (profile_ref,) = [a for a in arts if a["kind"] == "reference_profile"]
        stored_profile = trainer.runtime.settings.artifact_store().get(profile_ref["digest"])
        model = await trainer.client.get(
            f"/v1/runs/{run['run_id']}/artifacts/model", headers=tokens.headers("deployer")
        )
        assert model.status_code == 200 and digest_of(model.content) == run["artifact_digest"]
        x, y = _breast_cancer_xy()
        proba = breast_cancer.predict(model.content, x)  # the gateway's loader: JSON in, probabilities out
        assert ((proba >= 0.5) == (y == 1)).mean() > 0.95

    events = await read_events(kafka_bootstrap, topic_prefix, topics.TRAINING)
    (completed,) = of_job(events, job["id"], "training.completed")
    data = completed.data
    assert data["artifact_digest"] == run["artifact_digest"] and data["code_version"] == "git:test"
    assert data["datasets"][0]["content_digest"] == body["content_digest"]
    assert data["environment"]["python"].startswith("3.")
    assert data["params"] == {"epochs": 200, "seed": 1}
    # The profile (quantiles, min/max of the training data) travels by digest, never inline into the audit log.
    assert data["reference_profile"] is None
    assert data["reference_profile_uri"] == "vigil-artifact://" + data["reference_profile_digest"]
    raw_profile = stored_profile  # read through the trainer's artifact store before it stopped
    assert digest_of(raw_profile) == data["reference_profile_digest"]
    profile = DatasetProfile.from_dict(orjson.loads(raw_profile))
    assert profile.numeric is not None and len(profile.numeric.names) == 30
    assert len(data["signature"]) == 30
    # Causal chain: completed ← requested ← the dataset announcement.
    (requested,) = of_job(events, job["id"], "training.requested")
    assert completed.causationid == requested.id and requested.causationid == announced.id
    assert completed.correlationid == announced.id


async def test_raise_timeout_and_memory_fail_with_reason_after_retries_while_others_succeed(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tokens: Tokens, tmp_path: Path
) -> None:
    common = _common(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    body = patient_dataset(tmp_path / "data")
    cases = {
        "raises": ({"fail": "diverged at step 3"}, {"max_attempts": 2}, "error", "diverged at step 3"),
        "overruns": ({"sleep_s": 30, "steps": 30}, {"timeout_s": 2, "max_attempts": 1}, "timeout", "timeout"),
        "hogs": ({"allocate_mb": 3000}, {"memory_limit_mb": 1024, "max_attempts": 1}, "memory", "MemoryError"),
        "healthy": ({"sleep_s": 0.5}, {}, None, None),
    }
    sched_settings = settings_for(
        SchedulerSettings, **common, scheduler_tick_interval_ms=100, scheduler_max_concurrent_jobs=4
    )
    async with (
        running(make_scheduler(sched_settings)) as sched,
        running(make_trainer(trainer_settings(TrainerSettings, tmp_path, **common, trainer_workers=4))) as trainer,
    ):
        for model, (params, extra, _reason, _text) in cases.items():
            await put_policy(sched.client, tokens, model, policy(["patients"], params=params, **extra))
        await publish(kafka_bootstrap, topic_prefix, [registered("patients", 1, body)])

        async def all_jobs() -> list[dict[str, Any]]:
            r = await sched.client.get("/v1/jobs", headers=tokens.headers("viewer"))
            items: list[dict[str, Any]] = r.json()["items"]
            return items if len(items) == len(cases) else []

        by_model = {j["model"]: j for j in await eventually(all_jobs, what="one job per model")}
        finals = {
            m: await wait_job(sched.client, tokens, j["id"], {"succeeded", "failed"}, timeout=90)
            for m, j in by_model.items()
        }
        runs = (await trainer.client.get("/v1/runs", headers=tokens.headers("viewer"))).json()["items"]

    events = await read_events(kafka_bootstrap, topic_prefix, topics.TRAINING)
    for model, (_params, extra, reason, text) in cases.items():
        final, job_id = finals[model], by_model[model]["id"]
        failures = of_job(events, job_id, "training.failed")
        if reason is None:
            assert final["state"] == "succeeded", final["last_reason"]
            assert failures == [] and len(of_job(events, job_id, "training.completed")) == 1
            continue
        attempts = extra.get("max_attempts", 1)
        assert final["state"] == "failed", (model, final)
        assert [f.data["reason"] for f in failures] == [reason] * attempts, model
        assert all(text in f.data["error"] for f in failures), [f.data["error"] for f in failures]
        assert [f.data["attempt"] for f in failures] == list(range(1, attempts + 1))
        assert of_job(events, job_id, "training.completed") == []
        assert f"attempts exhausted ({attempts})" in final["last_reason"]
        job_runs = [r for r in runs if r["job_id"] == job_id]
        assert sorted(r["failure_reason"] for r in job_runs) == [reason] * attempts
        assert all(r["state"] == "failed" for r in job_runs)
    # The retry of the raising job waited its backoff and was its own attempt, with its own logs.
    raised = [t["to_state"] for t in finals["raises"]["transitions"]]
    assert raised == ["pending", "scheduled", "running", "pending", "scheduled", "running", "failed"]


async def test_runner_killed_mid_run_is_retried_once_and_completes_once(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tokens: Tokens, tmp_path: Path
) -> None:
    common = _common(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    body = patient_dataset(tmp_path / "data")
    marker_dir = marker_directory(tmp_path / "markers")
    async with (
        running(make_scheduler(settings_for(SchedulerSettings, **common, scheduler_tick_interval_ms=100))) as sched,
        running(make_trainer(trainer_settings(TrainerSettings, tmp_path, **common))) as trainer,
    ):
        params = {"sleep_s": 4, "steps": 8, "marker_dir": str(marker_dir)}
        await put_policy(sched.client, tokens, "risk", policy(["patients"], params=params, max_attempts=3))
        await publish(kafka_bootstrap, topic_prefix, [registered("patients", 1, body)])

        async def first_execution() -> list[str]:
            return markers(marker_dir)

        (first_marker,) = await eventually(first_execution, what="the first execution to start")
        job_id, run_id = first_marker.split(".")
        runner = _runner_process(run_id)
        os.kill(runner.pid, signal.SIGKILL)

        done = await wait_job(sched.client, tokens, job_id, {"succeeded", "failed"}, timeout=60)
        assert done["state"] == "succeeded", done["last_reason"]
        assert done["attempt"] == 2
        assert "killed by signal SIGKILL" in done["transitions"][3]["reason"]
        runs = (
            await trainer.client.get("/v1/runs", params={"job_id": job_id}, headers=tokens.headers("viewer"))
        ).json()
        assert [(r["attempt"], r["state"]) for r in runs["items"]] == [(1, "failed"), (2, "succeeded")]
        assert len(markers(marker_dir)) == 2  # the killed execution and exactly one re-run
        logs = (await trainer.client.get(f"/v1/runs/{run_id}/logs", headers=tokens.headers("viewer"))).json()["items"]
        assert any("probe: job" in line["line"] for line in logs)
        # Logs expire after trainer_log_retention_days (30): backdated past it, the next check deletes them and only
        # them; the runs stay.
        expiry = trainer.runtime.parts.get(LogExpiry)
        assert await expiry.tick() == 0
        async with trainer.runtime.pool.acquire() as conn:
            await conn.execute("UPDATE run_logs SET at = now() - interval '31 days' WHERE run_id = $1", run_id)
        assert await expiry.tick() == len(logs)
        assert (await trainer.client.get(f"/v1/runs/{run_id}/logs", headers=tokens.headers("viewer"))).json()[
            "items"
        ] == []
        runs_after = await trainer.client.get("/v1/runs", params={"job_id": job_id}, headers=tokens.headers("viewer"))
        assert len(runs_after.json()["items"]) == 2
        await asyncio.sleep(1.0)
        assert len(markers(marker_dir)) == 2

    events = await read_events(kafka_bootstrap, topic_prefix, topics.TRAINING)
    assert len(of_job(events, job_id, "training.completed")) == 1
    assert [e.data["attempt"] for e in of_job(events, job_id, "training.requested")] == [1, 2]


def _runner_process(run_id: str) -> psutil.Process:
    for proc in psutil.Process().children(recursive=True):
        try:
            if any(run_id in part for part in proc.cmdline()):
                return proc
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"no runner process for run {run_id}")


def _breast_cancer_xy() -> tuple[Any, Any]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return data.data, 1 - data.target


async def test_a_stalled_worker_keeps_its_run_its_own_reaper_renews_the_lease(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tokens: Tokens, tmp_path: Path
) -> None:
    """A lease finds dead workers; a live one whose event loop stalled past the lease (what failed a fresh-clone CI
    run with ``worker_lost`` on a saturated host) is not dead. With the run's lease expired in the database while
    its runner is mid-training, this process's reaper renews it: the run completes as attempt 1, nothing is lost."""
    from vigil.trainer.worker import WorkerPool

    common = _common(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    body = patient_dataset(tmp_path / "data")
    marker_dir = marker_directory(tmp_path / "markers")
    async with (
        running(make_scheduler(settings_for(SchedulerSettings, **common, scheduler_tick_interval_ms=100))) as sched,
        running(make_trainer(trainer_settings(TrainerSettings, tmp_path, **common, trainer_lease_s=30.0))) as trainer,
    ):
        params = {"sleep_s": 3, "steps": 6, "marker_dir": str(marker_dir)}
        await put_policy(sched.client, tokens, "risk", policy(["patients"], params=params, max_attempts=3))
        await publish(kafka_bootstrap, topic_prefix, [registered("patients", 1, body)])

        async def first_execution() -> list[str]:
            return markers(marker_dir)

        (first_marker,) = await eventually(first_execution, what="the execution to start")
        job_id, run_id = first_marker.split(".")
        async with trainer.runtime.pool.acquire() as conn:
            expire = "UPDATE runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = $1"
            await conn.execute(expire, run_id)
            assert await trainer.runtime.parts.get(WorkerPool).reap() == 0
            renewed = await conn.fetchval("SELECT lease_expires_at > now() + interval '20 seconds' FROM runs "
                                          "WHERE run_id = $1", run_id)  # fmt: skip
        assert renewed

        done = await wait_job(sched.client, tokens, job_id, {"succeeded", "failed"}, timeout=60)
        assert done["state"] == "succeeded", done["last_reason"]
        assert done["attempt"] == 1
        runs = (
            await trainer.client.get("/v1/runs", params={"job_id": job_id}, headers=tokens.headers("viewer"))
        ).json()
        assert [(r["attempt"], r["state"]) for r in runs["items"]] == [(1, "succeeded")]
        assert len(markers(marker_dir)) == 1
