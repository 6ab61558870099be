"""The first half of the loop across four real services (in-process, real broker, Postgres, subprocess training):

data.updated → registry (dataset version) → scheduler (job) → trainer (run) → registry (gates → model version),
and the auditor can explain the model version back to the data announcement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from integration.trainer.trainer_support import put_policy, trainer_settings

from support.services import eventually, make_tokens, running, settings_for
from vigil.auditor.app import make_app as make_auditor
from vigil.auditor.settings import AuditorSettings
from vigil.registry.app import make_app as make_registry
from vigil.registry.settings import RegistrySettings
from vigil.scheduler.app import make_app as make_scheduler
from vigil.scheduler.settings import SchedulerSettings
from vigil.trainer.app import make_app as make_trainer
from vigil.trainer.examples import patient_risk
from vigil.trainer.settings import TrainerSettings

pytestmark = pytest.mark.e2e

MODEL = "patient-risk-clf"


async def test_data_update_becomes_a_registered_model_version(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    common: dict[str, Any] = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    shared_artifacts = {"artifact_root": tmp_path / "artifacts"}
    async with (
        running(
            make_registry(settings_for(RegistrySettings, **common, **shared_artifacts, dataset_roots=[tmp_path]))
        ) as registry,
        running(make_scheduler(settings_for(SchedulerSettings, **common, scheduler_tick_interval_ms=100))) as sched,
        running(make_trainer(trainer_settings(TrainerSettings, tmp_path, **common))),
        running(make_auditor(settings_for(AuditorSettings, **common))) as auditor,
    ):
        await put_policy(
            sched.client,
            tokens,
            MODEL,
            {
                "datasets": [patient_risk.DATASET],
                "entrypoint": "vigil.trainer.examples.patient_risk:train",
                "params": {"epochs": 150, "seed": 3},
                "code_version": "git:e2e",
                "debounce_s": 0.5,
                "max_attempts": 2,
                "backoff_base_s": 0.2,
                "timeout_s": 120,
                "memory_limit_mb": 2048,
            },
        )
        body = patient_risk.write_dataset(tmp_path / "data" / "v1.csv", rows=2000, seed=7)
        r = await registry.client.post("/v1/data-updates", json=body, headers=tokens.headers("scientist"))
        assert r.status_code == 201, r.text
        announcement = r.json()["event_id"]

        async def model_version() -> list[dict[str, Any]]:
            resp = await registry.client.get(f"/v1/models/{MODEL}/versions", headers=tokens.headers("viewer"))
            if resp.status_code != 200:
                return []
            items: list[dict[str, Any]] = resp.json()["items"]
            return items

        (version,) = await eventually(model_version, timeout=150, what="model version 1 registered")
        assert version["version"] == 1
        assert version["metrics"]["val_auc"] > 0.7
        assert version["datasets"][0]["content_digest"] == body["content_digest"]

        # The audit log explains the model version all the way back to the data announcement.
        registered = await _registered_event(auditor, tokens.headers("auditor"))
        why = (await auditor.client.get(f"/v1/why/{registered}", headers=tokens.headers("auditor"))).json()
        chain = [e["event_type"] for e in why["chain"]]
        assert chain[0] == "model.version.registered"
        assert chain[-1] == "data.updated"
        assert why["chain"][-1]["event_id"] == announcement
        assert "training.completed" in chain
        assert "training.requested" in chain
        assert "dataset.version.registered" in chain
        assert why["complete"] is True


async def _registered_event(auditor: Any, headers: dict[str, str]) -> str:
    async def find() -> str | None:
        resp = await auditor.client.get("/v1/entries", params={"type": "model.version.registered"}, headers=headers)
        items = resp.json()["items"]
        return str(items[0]["event_id"]) if items else None

    found = await eventually(find, timeout=30, what="model.version.registered audited")
    assert found is not None
    return found
