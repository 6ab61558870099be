"""Helpers of the deployer's integration tests: a handle on a running deployer, models, and the monitor's events.

Imported by the test modules (pytest puts this directory on sys.path); the fixtures live in conftest.py. The
registry and the monitor are other services: their events are put on the test's topics directly, as they would
be on the wire, signed with the producing service's key (``publish`` overrides that, e.g. to forge them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from support.kafka import produce_events, read_all
from support.services import RunningService, Tokens, eventually, running, settings_for
from vigil.artifacts import LocalArtifactStore, digest_of
from vigil.deployer.gateway import choose_variant
from vigil.deployer.settings import DeployerSettings
from vigil.events import Envelope, make_event, topics
from vigil.events.catalog.common import Evidence, Window
from vigil.events.catalog.deployments import AnalysisVerdict
from vigil.events.catalog.models import GateResult, ModelVersionRegistered
from vigil.events.catalog.monitoring import RollbackRequested
from vigil.modelformat import LinearModel

FEATURES = ("age", "bmi", "heart_rate")


def linear(coef: float, intercept: float = 0.0) -> LinearModel:
    """A classifier whose scores differ per ``coef`` (so answers tell versions apart)."""
    return LinearModel(
        task="binary_classification",
        feature_names=FEATURES,
        mean=np.array([50.0, 25.0, 70.0]),
        scale=np.array([10.0, 4.0, 12.0]),
        coef=np.array([coef, -coef / 2, coef / 3]),
        intercept=intercept,
    )


def row(i: int) -> dict[str, float]:
    return {"age": 30.0 + i % 40, "bmi": 20.0 + (i % 13) * 0.7, "heart_rate": 55.0 + i % 30}


def window() -> Window:
    end = datetime.now(UTC)
    return Window(start=end - timedelta(minutes=5), end=end)


@dataclass
class Deployer:
    """A running deployer plus what a test needs to talk to it and to the topics around it."""

    service: RunningService
    tokens: Tokens
    bootstrap: str
    prefix: str
    artifact_root: Path
    settings: DeployerSettings

    @property
    def client(self):  # type: ignore[no-untyped-def]
        return self.service.client

    def h(self, role: str) -> dict[str, str]:
        return self.tokens.headers(role)

    # ------------------------------------------------------------------ upstream events
    async def register_version(
        self, model: str, version: int, lm: LinearModel, *, stored: bool = True, **publish: Any
    ) -> Envelope:
        """What the registry announces after the gates passed: the artifact is in the shared store (unless not
        ``stored``: a version whose artifact went missing)."""
        data = lm.to_bytes()
        digest = LocalArtifactStore(self.artifact_root).put(data) if stored else digest_of(data)
        event = make_event(
            ModelVersionRegistered(
                model=model,
                version=version,
                source="training",
                artifact_digest=digest,
                artifact_uri=f"vigil-artifact://{digest}",
                artifact_format="json",
                gates=[
                    GateResult(
                        gate="auc_floor", kind="metric_floor", metric="auc", value=0.8, threshold=0.7, passed=True
                    )
                ],
                gate_policy_version=1,
            ),
            source="vigil://registry",
            actor="service:registry",
        )
        await produce_events(self.bootstrap, f"{self.prefix}{topics.MODELS}", [event], key=model.encode(), **publish)
        return event

    async def verdict(
        self,
        deployment: str,
        model: str,
        verdict: str,
        *,
        rollout_id: str,
        step_index: int,
        candidate_version: int,
        samples: int = 500,
        **publish: Any,
    ) -> Envelope:
        event = make_event(
            AnalysisVerdict(
                deployment=deployment,
                model=model,
                rollout_id=rollout_id,
                step_index=step_index,
                stable_version=1,
                candidate_version=candidate_version,
                verdict=verdict,  # type: ignore[arg-type]
                window=window(),
                candidate_samples=samples,
                stable_samples=samples,
                evidence=[
                    Evidence(
                        statistic="auc",
                        value=0.81,
                        threshold=0.7,
                        operator="lt",
                        breached=False,
                        baseline=0.8,
                        sample_size=samples,
                    )
                ],
                policy_version=2,
            ),
            source="vigil://monitor",
            actor="service:monitor",
        )
        await produce_events(
            self.bootstrap, f"{self.prefix}{topics.MONITORING}", [event], key=deployment.encode(), **publish
        )
        return event

    async def rollback_requested(
        self,
        deployment: str,
        model: str,
        *,
        rollout_id: str | None,
        candidate_version: int,
        evidence: list[Evidence],
        **publish: Any,
    ) -> Envelope:
        event = make_event(
            RollbackRequested(
                deployment=deployment,
                model=model,
                window=window(),
                evidence=evidence,
                policy_version=4,
                rollout_id=rollout_id,
                stable_version=1,
                candidate_version=candidate_version,
                reason="candidate_worse",
                detail="candidate AUC below stable's",
            ),
            source="vigil://monitor",
            actor="service:monitor",
        )
        await produce_events(
            self.bootstrap, f"{self.prefix}{topics.MONITORING}", [event], key=deployment.encode(), **publish
        )
        return event

    # ------------------------------------------------------------------ API
    async def create(self, **body: Any) -> dict[str, Any]:
        r = await self.client.post("/v1/deployments", json=body, headers=self.h("deployer"))
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def get(self, name: str) -> dict[str, Any]:
        r = await self.client.get(f"/v1/deployments/{name}", headers=self.h("viewer"))
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def wait_for(self, name: str, what: str, predicate: Any, timeout: float = 45.0) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            dep = await self.get(name)
            return dep if predicate(dep) else None

        result: dict[str, Any] = await eventually(probe, what=what, timeout=timeout)
        return result

    async def predict(self, name: str, body: dict[str, Any], role: str = "predictor") -> dict[str, Any]:
        r = await self.client.post(f"/v1/deployments/{name}/predict", json=body, headers=self.h(role))
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def split(self, name: str, n: int) -> Counter[int]:
        """Versions answering ``n`` key-less single-row requests."""
        seen: Counter[int] = Counter()
        for i in range(n):
            answer = await self.predict(name, {"features": row(i)})
            assert answer["variant"] in ("stable", "candidate")
            seen[answer["version"]] += 1
        return seen

    async def rollout(self, name: str, rollout_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/v1/deployments/{name}/rollouts/{rollout_id}", headers=self.h("viewer"))
        assert r.status_code == 200, r.text
        return dict(r.json())

    # ------------------------------------------------------------------ topics
    async def events_on(self, topic: str, *, expect: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        records = await read_all(self.bootstrap, f"{self.prefix}{topic}", expect=expect, timeout=timeout)
        return [orjson.loads(r.value) for r in records]

    async def deployment_events(self, until_type: str, *, count: int = 1) -> list[dict[str, Any]]:
        """Events on vigil.deployments, read until ``count`` of ``until_type`` are there."""

        async def probe() -> list[dict[str, Any]] | None:
            events = await self.events_on(topics.DEPLOYMENTS, expect=10_000, timeout=1.5)
            return events if sum(e["type"] == until_type for e in events) >= count else None

        events: list[dict[str, Any]] = await eventually(probe, what=f"{count}× {until_type}")
        return events


async def register_onnx(deployer: Deployer, model: str, version: int, artifact: bytes) -> None:
    """What the registry announces for an ONNX version; the artifact is in the shared store."""
    digest = LocalArtifactStore(deployer.artifact_root).put(artifact)
    event = make_event(
        ModelVersionRegistered(
            model=model,
            version=version,
            source="training",
            artifact_digest=digest,
            artifact_uri=f"vigil-artifact://{digest}",
            artifact_format="onnx",
            gate_policy_version=1,
        ),
        source="vigil://registry",
        actor="service:registry",
    )
    await produce_events(deployer.bootstrap, f"{deployer.prefix}{topics.MODELS}", [event], key=model.encode())


#: The ``start_deployer`` fixture: starts a deployer (again) on the test's database, topics and artifact store.
#: Here rather than in conftest.py: ``from conftest import …`` finds another directory's conftest when several test
#: directories are collected in one run.
StartDeployer = Callable[[], AbstractAsyncContextManager[Deployer]]


def key_for(deployment: str, weight: int, variant: str) -> str:
    """A request key the gateway routes to ``variant`` at ``weight`` percent (routing is a pure hash)."""
    return next(k for k in (f"key-{i}" for i in range(10_000)) if choose_variant(deployment, weight, k) == variant)


@asynccontextmanager
async def monitor_beside(deployer: Deployer, dsn: str) -> AsyncIterator[RunningService]:
    """The monitor on the deployer's topics, database and artifact store (short windows): what the gateway logs,
    folded into windows, for tests that follow served traffic into the monitor."""
    from vigil.monitor.app import make_app as make_monitor
    from vigil.monitor.settings import MonitorSettings

    settings = settings_for(
        MonitorSettings,
        dsn=dsn,
        bootstrap=deployer.bootstrap,
        prefix=deployer.prefix,
        tokens=deployer.tokens,
        artifact_root=deployer.artifact_root,
        window_s=2.0,
        window_grace_s=1.0,
        tick_s=0.25,
        policy_cache_s=0.0,
    )
    async with running(make_monitor(settings)) as service:
        yield service


async def logged_payload(deployer: Deployer, deployment: str, ids: list[str]) -> dict[str, Any]:
    """The ``prediction.logged`` payload holding these prediction ids (one request: one event)."""

    async def probe() -> dict[str, Any] | None:
        for event in await deployer.events_on(topics.PREDICTIONS, expect=10_000, timeout=1.5):
            data = event["data"]
            if data["deployment"] == deployment and set(ids) <= set(data["prediction_ids"]):
                return dict(data)
        return None

    found: dict[str, Any] = await eventually(probe, timeout=60, what=f"{deployment}'s predictions logged")
    return found
