"""The closed loop with all six services in-process (real broker, Postgres, subprocess training), no manual step:

dataset v1 → job → training → gates → v1 registered → deployed (serves at once) → traffic + labels → the monitor
closes windows → dataset v2 with concept drift → v2 trained → canary at 50 % → traffic from the v1 population +
labels → the monitor finds the candidate worse → rollback.requested → the deployer rolls back → v1 serves all.
The outcome is read back through the APIs: deployment, registry champion, the rollback's evidence, and the
auditor's causal chain from the rollback back to the data announcement.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from integration.trainer.trainer_support import trainer_settings

from support.services import eventually, make_tokens, running, settings_for
from vigil.auditor.app import make_app as make_auditor
from vigil.auditor.settings import AuditorSettings
from vigil.demo import loop
from vigil.deployer.app import make_app as make_deployer
from vigil.deployer.settings import DeployerSettings
from vigil.monitor.app import make_app as make_monitor
from vigil.monitor.settings import MonitorSettings
from vigil.registry.app import make_app as make_registry
from vigil.registry.settings import RegistrySettings
from vigil.scheduler.app import make_app as make_scheduler
from vigil.scheduler.settings import SchedulerSettings
from vigil.trainer.app import make_app as make_trainer
from vigil.trainer.examples import patient_risk
from vigil.trainer.settings import TrainerSettings

pytestmark = pytest.mark.e2e

MODEL = "patient-risk-clf"
DEPLOYMENT = "patient-risk"
WINDOW_S = 8.0
#: Outcomes arrive a little after the predictions (the monitor joins a label only to a prediction it has seen).
LABEL_DELAY_S = 2.0
CANARY_WEIGHT = 50

SCHEDULE = {
    "datasets": [patient_risk.DATASET],
    "entrypoint": "vigil.trainer.examples.patient_risk:train",
    "params": {"epochs": 150, "seed": 3},
    "code_version": "git:e2e",
    "debounce_s": 0.5,
    "max_attempts": 2,
    "backoff_base_s": 0.2,
    "timeout_s": 120,
    "memory_limit_mb": 2048,
}

MONITOR_POLICY = {
    # Quality decides this canary: without labels a window is Inconclusive, never a pass on latency alone.
    "canary": {"min_samples": 100, "min_labels": 50, "require_quality": True},
    "drift": {"min_samples": 100},
    # No retraining on drift here: the story ends with the rollback.
    "actions": {"retrain_on_drift_windows": None},
}


async def test_worse_candidate_is_rolled_back_by_the_loop(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    token = tokens.by_role["admin"]
    common: dict[str, Any] = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    artifacts = {"artifact_root": tmp_path / "artifacts"}
    monitor_settings = settings_for(
        MonitorSettings,
        **common,
        window_s=WINDOW_S,
        window_grace_s=3.0,
        tick_s=0.25,
        rolling_windows=3,
        policy_cache_s=0.0,
    )
    deployer_settings = settings_for(
        DeployerSettings, **common, **artifacts, rollout_tick_interval_ms=100, gateway_log_flush_ms=100
    )
    async with (
        running(
            make_registry(settings_for(RegistrySettings, **common, **artifacts, dataset_roots=[tmp_path]))
        ) as registry,
        running(make_scheduler(settings_for(SchedulerSettings, **common, scheduler_tick_interval_ms=100))) as sched,
        running(make_trainer(trainer_settings(TrainerSettings, tmp_path, **common))),
        running(make_deployer(deployer_settings)) as deployer,
        running(make_monitor(monitor_settings)) as monitor,
        running(make_auditor(settings_for(AuditorSettings, **common))) as auditor,
    ):
        reg, dep, mon, aud = registry.client, deployer.client, monitor.client, auditor.client

        # 1. configure the loop
        await loop.put_schedule_policy(sched.client, token, MODEL, SCHEDULE)
        await loop.create_deployment(
            dep,
            token,
            {
                "name": DEPLOYMENT,
                "model": MODEL,
                "strategy": "canary",
                "auto_deploy": "auto",
                "min_samples": 50,
                "steps": [
                    {"kind": "set_weight", "weight": CANARY_WEIGHT},
                    {"kind": "analysis"},
                    {"kind": "set_weight", "weight": 100},
                ],
            },
        )
        await loop.put_monitor_policy(mon, token, DEPLOYMENT, MONITOR_POLICY)

        # 2. dataset v1 → trained, gated, registered → serves at once
        v1_data = patient_risk.write_dataset(tmp_path / "data" / "v1.csv", rows=2000, seed=7)
        first_announcement = await loop.announce(reg, token, v1_data)
        await loop.wait_deployment(
            dep, token, DEPLOYMENT, lambda d: d["stable_version"] == 1, what="v1 serving", timeout_s=150
        )
        assert await _champion(reg, token) == 1

        # 3. live traffic from the population v1 was trained on, then its outcomes → windows with quality figures
        x, y = patient_risk.generate(300, seed=101)
        served = await loop.send_traffic(dep, token, DEPLOYMENT, x, patient_risk.FEATURES)
        assert {s.version for s in served} == {1}
        await asyncio.sleep(LABEL_DELAY_S)
        await loop.publish_labels(
            kafka_bootstrap, DEPLOYMENT, [s.prediction_id for s in served], y.tolist(), topic_prefix=topic_prefix
        )

        async def labelled_v1_window() -> list[dict[str, Any]]:
            r = await mon.get(
                "/v1/windows",
                params={"deployment": DEPLOYMENT, "version": 1, "kind": "tumbling"},
                headers=tokens.headers("viewer"),
            )
            return [w for w in r.json()["items"] if w["figures"].get("quality")]

        windows = await eventually(labelled_v1_window, timeout=60, what="a closed v1 window with labels")
        assert windows[0]["figures"]["quality"]["accuracy"] > 0.6

        # 4. dataset v2: the outcome now follows glucose much more strongly (concept drift). v2 fits its own data
        # well (passes its gates) but over-predicts risk on the population that is actually served.
        v2_data = patient_risk.write_dataset(tmp_path / "data" / "v2.csv", rows=2000, seed=8, concept_drift=1.0)
        await loop.announce(reg, token, v2_data)
        canary = await loop.wait_deployment(
            dep,
            token,
            DEPLOYMENT,
            lambda d: d["candidate_version"] == 2 and d["weights"]["candidate"] == CANARY_WEIGHT,
            what="v2 canary at 50 %",
            timeout_s=150,
        )
        assert canary["stable_version"] == 1
        assert canary["rollout"]["awaiting_verdict"] is True

        # Canary traffic inside one fresh window (it began after the analysis step did), its labels a little later.
        await loop.wait_next_window(WINDOW_S)
        x2, y2 = patient_risk.generate(800, seed=202)
        served2 = await loop.send_traffic(dep, token, DEPLOYMENT, x2, patient_risk.FEATURES, rows_per_request=20)
        by_version = {v: sum(1 for s in served2 if s.version == v) for v in (1, 2)}
        assert by_version[1] >= 100 and by_version[2] >= 100, by_version
        await asyncio.sleep(LABEL_DELAY_S)
        await loop.publish_labels(
            kafka_bootstrap, DEPLOYMENT, [s.prediction_id for s in served2], y2.tolist(), topic_prefix=topic_prefix
        )

        rolled_back = await loop.wait_deployment(
            dep,
            token,
            DEPLOYMENT,
            lambda d: d["rollout"] is None and d["candidate_version"] is None and d["stable_version"] == 1,
            what="v2 rolled back",
            timeout_s=90,
        )
        assert rolled_back["weights"] == {"stable": 100, "candidate": 0}
        rollouts = (await dep.get(f"/v1/deployments/{DEPLOYMENT}/rollouts", headers=tokens.headers("viewer"))).json()
        assert rollouts["items"][0]["candidate_version"] == 2
        assert rollouts["items"][0]["phase"] == "rolled_back"

        # Stable v1 answers everything again.
        after = await loop.send_traffic(dep, token, DEPLOYMENT, x2[:200], patient_risk.FEATURES, rows_per_request=10)
        assert {(s.version, s.variant) for s in after} == {(1, "stable")}

        # 5. the outcome, through the APIs
        assert await _champion(reg, token) == 1

        async def rollback_event() -> dict[str, Any] | None:
            events = await loop.audited_events(aud, token, "deployment.rolled_back")
            return events[0] if events else None

        event = await eventually(rollback_event, timeout=30, what="deployment.rolled_back audited")
        data = event["data"]
        assert (data["failed_version"], data["stable_version"]) == (2, 1)
        assert data["trigger"] in ("monitor", "analysis"), data
        evidence = {e["statistic"]: e for e in data["evidence"]}
        assert evidence["accuracy.drop"]["breached"] is True
        assert evidence["accuracy.drop"]["value"] > 0.05
        assert evidence["accuracy.drop"]["version"] == 2

        # The monitor asked for the rollback too, with the same kind of evidence (the deployer acts on whichever
        # of the Failed verdict and the request it reads first; the second is refused as a repeat).
        async def rollback_request() -> dict[str, Any] | None:
            requests = await loop.audited_events(aud, token, "rollback.requested")
            return requests[0] if requests else None

        request = (await eventually(rollback_request, timeout=30, what="rollback.requested audited"))["data"]
        assert (request["reason"], request["candidate_version"], request["stable_version"]) == ("candidate_worse", 2, 1)
        assert any(e["statistic"] == "accuracy.drop" and e["breached"] for e in request["evidence"])

        chain = await loop.why(aud, token, event["id"])
        kinds = [e["event_type"] for e in chain["chain"]]
        print("why deployment.rolled_back:", " ← ".join(kinds))
        assert kinds[0] == "deployment.rolled_back"
        assert kinds[-1] == "data.updated"
        assert chain["chain"][-1]["event_id"] != first_announcement  # v2's data, not v1's
        assert chain["complete"] is True

        report = await loop.verify(aud, token)
        assert report["ok"] is True, report
        assert report["entries_checked"] > 0


async def _champion(registry: Any, token: str) -> int | None:
    async def probe() -> int | None:
        r = await registry.get(f"/v1/models/{MODEL}/aliases/champion", headers={"Authorization": f"Bearer {token}"})
        return int(r.json()["version"]) if r.status_code == 200 else None

    version: int | None = await eventually(probe, timeout=45, what="a champion in the registry")
    return version
