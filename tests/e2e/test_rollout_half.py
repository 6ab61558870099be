"""The second half of the loop with the real registry in it: gated versions → deployer canary → monitor verdicts →
promotion → the registry moves ``champion`` → the audit log explains the alias back to the training run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from integration.deployer.deployer_support import Deployer, linear

from support.kafka import produce_events
from support.services import eventually, make_tokens, running, settings_for
from vigil.artifacts import LocalArtifactStore
from vigil.auditor.app import make_app as make_auditor
from vigil.auditor.settings import AuditorSettings
from vigil.deployer.app import make_app as make_deployer
from vigil.deployer.settings import DeployerSettings
from vigil.events import Envelope, make_event, topics
from vigil.events.catalog.common import DatasetRef
from vigil.events.catalog.training import Environment, TrainingCompleted
from vigil.modelformat import LinearModel
from vigil.registry.app import make_app as make_registry
from vigil.registry.settings import RegistrySettings

pytestmark = pytest.mark.e2e

MODEL = "sepsis-risk"


def completed(store: LocalArtifactStore, run: int, model: LinearModel) -> Envelope:
    """training.completed as the trainer writes it, with a real artifact in the shared store."""
    digest = store.put(model.to_bytes())
    return make_event(
        TrainingCompleted(
            model=MODEL,
            job_id=f"job-{run}",
            attempt=1,
            run_id=f"run-{run}",
            params={"epochs": 100},
            metrics={"val_auc": 0.8 + run / 100},
            artifact_digest=digest,
            artifact_uri=store.uri(digest),
            artifact_format="json",
            artifact_size_bytes=len(model.to_bytes()),
            signature=[{"name": n, "type": "float"} for n in model.feature_names],
            datasets=[
                DatasetRef(dataset="icu", version=run, content_digest="sha256:" + f"{run:064x}", uri="file:///icu")
            ],
            code_version="git:e2e",
            environment=Environment(python="3.11", platform="linux", packages={"numpy": np.__version__}),
            duration_s=1.0,
        ),
        source="vigil://trainer",
        actor="service:trainer",
    )


async def test_promotion_moves_champion_in_the_registry(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    artifacts = tmp_path / "artifacts"
    common: dict[str, Any] = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    deployer_settings = settings_for(
        DeployerSettings,
        **common,
        artifact_root=artifacts,
        rollout_tick_interval_ms=100,
        gateway_log_flush_ms=100,
        default_min_samples=50,
    )
    store = LocalArtifactStore(artifacts)
    async with (
        running(make_registry(settings_for(RegistrySettings, **common, artifact_root=artifacts))) as registry,
        running(make_deployer(deployer_settings)) as deployer_service,
        running(make_auditor(settings_for(AuditorSettings, **common))) as auditor,
    ):
        deployer = Deployer(deployer_service, tokens, kafka_bootstrap, topic_prefix, artifacts, deployer_settings)
        await deployer.create(
            name="sepsis-api",
            model=MODEL,
            strategy="canary",
            auto_deploy="auto",
            min_samples=50,
            steps=[{"kind": "set_weight", "weight": 25}, {"kind": "analysis"}, {"kind": "set_weight", "weight": 100}],
        )
        training = f"{topic_prefix}{topics.TRAINING}"
        await produce_events(kafka_bootstrap, training, [completed(store, 1, linear(0.5))], key=MODEL.encode())
        await deployer.wait_for("sepsis-api", "v1 serving", lambda d: d["stable_version"] == 1, timeout=60)

        await produce_events(kafka_bootstrap, training, [completed(store, 2, linear(-0.7))], key=MODEL.encode())
        dep = await deployer.wait_for("sepsis-api", "canary of v2", lambda d: d["weights"]["candidate"] == 25)
        served = await deployer.split("sepsis-api", 40)
        assert set(served) == {1, 2}, served

        await deployer.verdict(
            "sepsis-api",
            MODEL,
            "Successful",
            rollout_id=dep["rollout"]["id"],
            step_index=1,
            candidate_version=2,
            samples=200,
        )
        await deployer.wait_for("sepsis-api", "v2 promoted", lambda d: d["stable_version"] == 2, timeout=60)

        viewer = tokens.headers("viewer")

        async def champion() -> dict[str, Any] | None:
            r = await registry.client.get(f"/v1/models/{MODEL}/aliases/champion", headers=viewer)
            body: dict[str, Any] = r.json() if r.status_code == 200 else {}
            return body if body.get("version") == 2 else None

        alias = await eventually(champion, timeout=45, what="champion → v2 in the registry")
        history = (await registry.client.get(f"/v1/models/{MODEL}/aliases/champion/history", headers=viewer)).json()[
            "items"
        ]
        moved = history[-1]
        assert moved["to_version"] == 2
        assert alias["version"] == 2

        # The audit log explains the alias move: promotion ← … ← the registration ← training of v2.
        auditor_h = tokens.headers("auditor")

        async def alias_event() -> str | None:
            r = await auditor.client.get("/v1/entries", params={"type": "model.alias.changed"}, headers=auditor_h)
            for entry in r.json()["items"]:
                event = (await auditor.client.get(f"/v1/events/{entry['event_id']}", headers=auditor_h)).json()
                if event["event"]["data"]["model"] == MODEL and event["event"]["data"]["to_version"] == 2:
                    return str(entry["event_id"])
            return None

        event_id = await eventually(alias_event, what="model.alias.changed audited")
        why = (await auditor.client.get(f"/v1/why/{event_id}", headers=auditor_h)).json()
        kinds = [e["event_type"] for e in why["chain"]]
        assert kinds[0] == "model.alias.changed"
        assert "deployment.promoted" in kinds
        assert "model.version.registered" in kinds
        assert kinds[-1] == "training.completed"
        assert why["chain"][-1]["event"]["data"]["run_id"] == "run-2"
