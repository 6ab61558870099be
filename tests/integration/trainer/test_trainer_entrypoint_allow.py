"""The trainer runs only allow-listed entrypoints, whatever ``training.requested`` names (review finding 16).

Requests are written straight onto the broker (no scheduler: the fence must hold whoever sent them). An
entrypoint outside ``trainer_entrypoint_allow`` fails with ``invalid_input`` / ``entrypoint_not_allowed``, not
retryable, without a runner subprocess — and a module that would leave a mark when imported is never imported,
although the runner could find it on its ``PYTHONPATH``. An allowed entrypoint in the same trainer still trains.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from integration.trainer.trainer_support import (
    PROBE,
    marker_directory,
    markers,
    of_job,
    patient_dataset,
    publish,
    read_events,
    trainer_settings,
)

from support.services import Tokens, eventually, make_tokens, running
from vigil.events import new_id, topics
from vigil.events.catalog.common import DatasetRef
from vigil.events.catalog.training import TrainingRequested
from vigil.trainer.app import make_app as make_trainer
from vigil.trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration

HOSTILE_MODULE = "vigil_test_hostile_entry"


def _request(model: str, entrypoint: str, dataset: DatasetRef, params: dict[str, Any]) -> TrainingRequested:
    return TrainingRequested(
        model=model,
        job_id=new_id(),
        attempt=1,
        idempotency_key=os.urandom(32).hex(),
        entrypoint=entrypoint,
        params=params,
        datasets=[dataset],
        code_version="git:test",
        trigger="manual",
        timeout_s=60,
    )


async def test_entrypoints_outside_the_allow_list_fail_without_being_imported(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    # A module that, if ever imported by a runner, records it — and the runner would find it on PYTHONPATH.
    modules, imported = tmp_path / "modules", tmp_path / "imported"
    modules.mkdir()
    (modules / f"{HOSTILE_MODULE}.py").write_text(
        f"from pathlib import Path\nPath({str(imported)!r}).write_text('imported')\n\n"
        "def train(ctx):\n    raise SystemExit\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(modules), os.environ.get("PYTHONPATH")])))

    body = patient_dataset(tmp_path / "data")
    dataset = DatasetRef(dataset="patients", version=1, content_digest=body["content_digest"], uri=body["uri"])
    marker_dir = marker_directory(tmp_path / "markers")
    requests = {
        "shell": _request("shell", "os:system", dataset, {}),
        "hostile": _request("hostile", f"{HOSTILE_MODULE}:train", dataset, {}),
        # Importable and harmless, but not on this trainer's list (only the probe is).
        "example": _request("example", "vigil.trainer.examples.breast_cancer:train", dataset, {}),
        "allowed": _request("allowed", PROBE, dataset, {"marker_dir": str(marker_dir)}),
    }
    settings = trainer_settings(
        TrainerSettings, tmp_path, dsn=fresh_db, bootstrap=kafka_bootstrap, prefix=topic_prefix, tokens=tokens,
        trainer_entrypoint_allow=[PROBE],
    )  # fmt: skip
    async with running(make_trainer(settings)) as trainer:
        await publish(kafka_bootstrap, topic_prefix, list(requests.values()), actor="service:scheduler")

        async def finished() -> list[dict[str, Any]]:
            r = await trainer.client.get("/v1/runs", headers=tokens.headers("viewer"))
            items: list[dict[str, Any]] = r.json()["items"]
            done = [i for i in items if i["state"] in ("succeeded", "failed")]
            return done if len(done) == len(requests) else []

        runs = {r["model"]: r for r in await eventually(finished, timeout=90, what="every run finished")}

    events = await read_events(kafka_bootstrap, topic_prefix, topics.TRAINING)
    for model in ("shell", "hostile", "example"):
        run, job_id = runs[model], requests[model].job_id
        assert run["state"] == "failed", run
        assert run["failure_reason"] == "invalid_input"
        assert run["error"].startswith("entrypoint_not_allowed: "), run["error"]
        assert run["exit_code"] is None and run["log_lines"] == 0, "a runner subprocess was started"
        (failed,) = of_job(events, job_id, "training.failed")
        assert failed.data["reason"] == "invalid_input" and failed.data["retryable"] is False
        assert failed.data["error"].startswith("entrypoint_not_allowed: ")
        assert of_job(events, job_id, "training.completed") == []
    assert not imported.exists(), "the hostile module was imported"
    assert HOSTILE_MODULE not in sys.modules
    # The fence lets the listed entrypoint through, in the same trainer.
    assert runs["allowed"]["state"] == "succeeded", runs["allowed"]["error"]
    assert len(markers(marker_dir)) == 1
    assert len(of_job(events, requests["allowed"].job_id, "training.completed")) == 1
