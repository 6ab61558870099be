"""The tree-ensemble examples through the real loop: scheduler → trainer (subprocess) → registry, on the real broker
and Postgres. LightGBM on the breast-cancer data and XGBoost on the patient-risk generator train, convert to ONNX in
the runner, and the registry registers both with the signature read from the graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from integration.trainer.trainer_support import (
    patient_dataset,
    policy,
    publish,
    put_policy,
    registered,
    trainer_settings,
    wait_job,
)

from support.services import Tokens, eventually, make_tokens, running, settings_for
from vigil.modelformat import OnnxModel, load_model
from vigil.registry.app import make_app as make_registry
from vigil.registry.settings import RegistrySettings
from vigil.scheduler.app import make_app as make_scheduler
from vigil.scheduler.settings import SchedulerSettings
from vigil.trainer.app import make_app as make_trainer
from vigil.trainer.examples import breast_cancer
from vigil.trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration


async def test_tree_examples_train_convert_and_register(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    common: dict[str, Any] = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    bc_body = breast_cancer.write_dataset(tmp_path / "data")
    pr_body = {**patient_dataset(tmp_path / "data", rows=1500, seed=3), "dataset": "patient-risk"}
    async with (
        running(make_scheduler(settings_for(SchedulerSettings, **common, scheduler_tick_interval_ms=100))) as sched,
        running(make_trainer(trainer_settings(TrainerSettings, tmp_path, **common))) as trainer,
        running(make_registry(settings_for(RegistrySettings, **common, artifact_root=tmp_path / "artifacts"))) as reg,
    ):
        await put_policy(
            sched.client, tokens, "bc-trees",
            policy([breast_cancer.DATASET], entrypoint="vigil.trainer.examples.breast_cancer:train_gbm",
                   params={"n_estimators": 100, "max_depth": 4, "seed": 1}, memory_limit_mb=3072, timeout_s=120),
        )  # fmt: skip
        await put_policy(
            sched.client, tokens, "pr-trees",
            policy(["patient-risk"], entrypoint="vigil.trainer.examples.patient_risk:train_gbm",
                   params={"library": "xgboost", "n_estimators": 100, "max_depth": 4}, memory_limit_mb=3072,
                   timeout_s=120),
        )  # fmt: skip
        await publish(
            kafka_bootstrap,
            topic_prefix,
            [registered(breast_cancer.DATASET, 1, bc_body), registered("patient-risk", 1, pr_body)],
        )
        viewer = tokens.headers("viewer")

        async def both_jobs() -> list[dict[str, Any]] | None:
            items: list[dict[str, Any]] = (await sched.client.get("/v1/jobs", headers=viewer)).json()["items"]
            return items if len(items) == 2 else None

        for job in await eventually(both_jobs, what="two jobs"):
            done = await wait_job(sched.client, tokens, job["id"], {"succeeded", "failed"}, timeout=150)
            assert done["state"] == "succeeded", done["last_reason"]

        async def version(model: str) -> dict[str, Any] | None:
            r = await reg.client.get(f"/v1/models/{model}/versions/1", headers=viewer)
            return dict(r.json()) if r.status_code == 200 else None

        bc = await eventually(lambda: version("bc-trees"), timeout=30, what="bc-trees v1 registered")
        pr = await eventually(lambda: version("pr-trees"), timeout=30, what="pr-trees v1 registered")

        for v, n_features, producer in ((bc, 30, "OnnxMLTools"), (pr, 8, "OnnxMLTools")):
            assert v["artifact_format"] == "onnx"
            sig = v["artifact_signature"]
            assert len(sig["feature_names"]) == n_features == len(v["signature"])
            assert sig["task"] == "binary_classification"
            assert sig["producer"]["name"] == producer
            assert v["gates"][0]["gate"] == "artifact" and v["gates"][0]["passed"]
        assert bc["metrics"]["val_auc"] > 0.97
        assert pr["metrics"]["val_auc"] > 0.6  # 1,500 noisy patients: a real signal, not the breast-cancer margin

        (run,) = (await trainer.client.get("/v1/runs", params={"model": "bc-trees"}, headers=viewer)).json()["items"]
        curve = (
            await trainer.client.get(
                f"/v1/runs/{run['run_id']}/metrics", params={"name": "val_log_loss_round"}, headers=viewer
            )
        ).json()["items"]
        assert [m["step"] for m in curve] == list(range(10, 101, 10))
        assert curve[-1]["value"] < curve[0]["value"]
        artifact = await trainer.client.get(
            f"/v1/runs/{run['run_id']}/artifacts/model", headers=tokens.headers("deployer")
        )
        assert artifact.status_code == 200

    model = load_model(artifact.content)  # the gateway's loader: ONNX in, one session, no pickle
    assert isinstance(model, OnnxModel)
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    outputs, scores = model.run(data.data)
    assert ((scores >= 0.5) == (1 - data.target == 1)).mean() > 0.95
    assert (outputs == (scores >= 0.5)).mean() > 0.99  # the graph's own label output agrees with its probabilities
