"""A retraining policy's ``executor`` picks where its runs execute (issue #24 item 4), through the real broker and
Postgres: scheduler → ``training.requested`` (which carries it) → trainer.

One trainer whose default is Ray but which has no Ray address: a policy saying ``executor: "ray"`` fails its run at
once (``invalid_input`` naming the executor, no runner, not retried); one saying ``"local"`` overrides the trainer's
default and trains on the host; one saying nothing gets the trainer's default and fails like the first (the control:
without the field, this trainer would not train locally). The deprecated params key ``vigil.executor`` still works
when the policy names no executor and loses to the policy's field when both are set. The executor is visible on the
policy, the job, the request event and the run. A policy naming anything else is refused with a 422, and so is a
manual trigger's, whose executor (what replaces the params key's per-job choice) overrides the policy's for its job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from integration.trainer.trainer_support import (
    fake_registered,
    jobs,
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
from vigil.trainer.worker import EXECUTOR_PARAM

pytestmark = pytest.mark.integration


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return make_tokens(tmp_path)


async def _trigger(client: httpx.AsyncClient, tokens: Tokens, model: str, **body: Any) -> httpx.Response:
    return await client.post(f"/v1/policies/{model}/trigger", json=body, headers=tokens.headers("scientist"))


async def test_the_policy_executor_decides_where_runs_execute(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tokens: Tokens, tmp_path: Path
) -> None:
    common: dict[str, Any] = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    body = patient_dataset(tmp_path / "data")
    marker_dir = marker_directory(tmp_path / "markers")
    probe = {"marker_dir": str(marker_dir), "steps": 2}
    # model → (policy's executor, extra params); every policy may retry, so "failed after one attempt" means refused.
    cases: dict[str, tuple[str | None, dict[str, Any]]] = {
        "on-ray": ("ray", {}),
        "on-local": ("local", {}),
        "by-default": (None, {}),
        "legacy-local": (None, {EXECUTOR_PARAM: "local"}),
        "field-wins": ("local", {EXECUTOR_PARAM: "ray"}),
    }
    trainer_cfg = trainer_settings(TrainerSettings, tmp_path, **common, trainer_executor="ray")
    assert trainer_cfg.trainer_ray_address is None
    viewer = tokens.headers("viewer")
    async with (
        running(make_scheduler(settings_for(SchedulerSettings, **common, scheduler_tick_interval_ms=100))) as sched,
        running(make_trainer(trainer_cfg)) as trainer,
    ):
        for model, (executor, params) in cases.items():
            stored = await put_policy(
                sched.client, tokens, model,
                policy(["patients"], executor=executor, params={**probe, **params}, max_attempts=3),
            )  # fmt: skip
            assert stored["executor"] == executor
        await publish(kafka_bootstrap, topic_prefix, [registered("patients", 1, body)])

        async def all_jobs() -> list[dict[str, Any]] | None:
            items: list[dict[str, Any]] = (await sched.client.get("/v1/jobs", headers=viewer)).json()["items"]
            return items if len(items) == len(cases) else None

        listed = await eventually(all_jobs, what="one job per policy")
        assert listed is not None
        by_model = {j["model"]: j for j in listed}
        done = {
            model: await wait_job(sched.client, tokens, by_model[model]["id"], {"succeeded", "failed"}, timeout=120)
            for model in cases
        }
        runs: dict[str, dict[str, Any]] = {}
        for model, job in by_model.items():
            found = (await trainer.client.get("/v1/runs", params={"job_id": job["id"]}, headers=viewer)).json()
            (runs[model],) = found["items"]

    for model, (executor, _params) in cases.items():
        assert done[model]["executor"] == executor, model  # the job keeps the policy's executor

    # Refused at once: one attempt only (not retryable), no runner started, the executor and its source named.
    for model, source in (("on-ray", "the job's executor"), ("by-default", "this trainer's trainer_executor")):
        job, run = done[model], runs[model]
        assert (job["state"], job["attempt"]) == ("failed", 1), (model, job["last_reason"])
        assert (run["state"], run["failure_reason"], run["exit_code"]) == ("failed", "invalid_input", None), model
        assert run["executor"] == "ray"
        assert f"executor ray ({source}) but this trainer has no trainer_ray_address" in run["error"], run["error"]
        assert "trainer_ray_address" in job["last_reason"]

    # The policy's "local" (or, without it, the deprecated params key) overrides the trainer's ray default.
    trained = {model: runs[model] for model in ("on-local", "legacy-local", "field-wins")}
    for model, run in trained.items():
        assert done[model]["state"] == "succeeded", (model, done[model]["last_reason"])
        assert (run["state"], run["executor"], run["exit_code"]) == ("succeeded", "local", 0), model
    assert markers(marker_dir) == sorted(f"{by_model[m]['id']}.{run['run_id']}" for m, run in trained.items())

    events = await read_events(kafka_bootstrap, topic_prefix, topics.TRAINING)
    for model, (executor, _params) in cases.items():
        (requested,) = of_job(events, by_model[model]["id"], "training.requested")
        assert requested.data["executor"] == executor, model
        (failed_or_completed,) = [
            e for e in events
            if e.data.get("job_id") == by_model[model]["id"] and e.type in ("training.failed", "training.completed")
        ]  # fmt: skip
        expected = "training.completed" if model in trained else "training.failed"
        assert failed_or_completed.type == expected, model
        if expected == "training.failed":
            assert (failed_or_completed.data["reason"], failed_or_completed.data["retryable"]) == (
                "invalid_input",
                False,
            )


async def test_a_policy_or_trigger_naming_another_executor_is_refused_with_422(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tokens: Tokens
) -> None:
    common: dict[str, Any] = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    scientist, viewer = tokens.headers("scientist"), tokens.headers("viewer")
    async with running(make_scheduler(settings_for(SchedulerSettings, **common))) as sched:
        assert (await put_policy(sched.client, tokens, "risk", policy(["patients"], executor="local")))["revision"] == 1
        for bad in ("spark", "Ray", "", 1, ["ray"], {"name": "ray"}):
            r = await sched.client.put("/v1/policies/risk", json=policy(["patients"], executor=bad), headers=scientist)
            assert r.status_code == 422, (bad, r.text)
            (problem,) = r.json()["detail"]
            assert problem["loc"] == ["body", "executor"], problem
            assert "'local' or 'ray'" in problem["msg"], problem
        unchanged = (await sched.client.get("/v1/policies/risk", headers=viewer)).json()
        assert (unchanged["executor"], unchanged["revision"]) == ("local", 1)
        # null (or leaving it out) hands the choice back to the trainer.
        assert (await put_policy(sched.client, tokens, "risk", policy(["patients"], executor=None)))["executor"] is None
        assert (await put_policy(sched.client, tokens, "risk", policy(["patients"])))["executor"] is None

        # A manual trigger may name the executor of its one job; the policy's stands otherwise.
        await put_policy(sched.client, tokens, "risk", policy(["patients"], executor="local", debounce_s=3600))
        await publish(kafka_bootstrap, topic_prefix, [fake_registered("patients", 1)])

        async def known() -> bool:
            r = await _trigger(sched.client, tokens, "risk", executor="ray")
            assert r.status_code in (201, 409), r.text  # 409: no version of the dataset known yet
            return r.status_code == 201

        await eventually(known, what="a manual trigger once the dataset version is known")
        (ray_job,) = await jobs(sched.client, tokens, model="risk")
        assert ray_job["executor"] == "ray"
        # The executor is not an input: the same inputs without it are the same job, unless forced.
        same = await _trigger(sched.client, tokens, "risk")
        assert (same.status_code, same.json()["job"]["id"]) == (200, ray_job["id"]), same.text
        forced = await _trigger(sched.client, tokens, "risk", force=True)
        assert (forced.status_code, forced.json()["job"]["executor"]) == (201, "local"), forced.text
        r = await _trigger(sched.client, tokens, "risk", executor="spark", force=True)
        assert r.status_code == 422, r.text
        (problem,) = r.json()["detail"]
        assert (problem["loc"], "'local' or 'ray'" in problem["msg"]) == (["body", "executor"], True), problem
        assert len(await jobs(sched.client, tokens, model="risk")) == 2
