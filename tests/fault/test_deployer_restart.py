"""A deployer stopped mid-rollout resumes from Postgres: the timed pause that expired while it was down fires once
after the restart, and the rollout carries on from the step it was at."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from integration.deployer.deployer_support import Deployer, linear  # tests/ is on sys.path (pytest pythonpath)

from support.services import eventually, make_tokens, running, settings_for
from vigil.deployer.app import make_app
from vigil.deployer.batcher import PredictionBatcher
from vigil.deployer.settings import DeployerSettings

pytestmark = pytest.mark.fault


@pytest.fixture
def start_deployer(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> Callable[[], AbstractAsyncContextManager[Deployer]]:
    tokens = make_tokens(tmp_path)
    settings = settings_for(
        DeployerSettings,
        dsn=fresh_db,
        bootstrap=kafka_bootstrap,
        prefix=topic_prefix,
        tokens=tokens,
        artifact_root=tmp_path / "artifacts",
        rollout_tick_interval_ms=100,
    )

    @asynccontextmanager
    async def start() -> AsyncIterator[Deployer]:
        async with running(make_app(settings)) as service:
            yield Deployer(service, tokens, kafka_bootstrap, topic_prefix, tmp_path / "artifacts", settings)

    return start


async def test_timed_pause_survives_a_restart(
    start_deployer: Callable[[], AbstractAsyncContextManager[Deployer]], fresh_db: str
) -> None:
    async with start_deployer() as deployer:
        await deployer.create(
            name="demand",
            model="demand-model",
            auto_deploy="auto",
            steps=[
                {"kind": "set_weight", "weight": 20},
                {"kind": "pause", "duration_s": 3600},
                {"kind": "set_weight", "weight": 60},
                {"kind": "pause"},
            ],
        )
        await deployer.register_version("demand-model", 1, linear(0.1))
        await deployer.wait_for("demand", "v1 serving", lambda d: d["stable_version"] == 1)
        await deployer.register_version("demand-model", 2, linear(0.2))
        dep = await deployer.wait_for("demand", "canary at 20%", lambda d: d["weights"]["candidate"] == 20)
        rollout_id = dep["rollout"]["id"]
        assert dep["rollout"]["wake_at"] is not None

    # While the deployer is down, the hour passes (the timer is moved into the past, in the database's clock).
    conn = await asyncpg.connect(fresh_db)
    try:
        moved = await conn.execute(
            "UPDATE deployer.rollouts SET wake_at = now() - interval '1 second' WHERE id = $1", rollout_id
        )
        assert moved == "UPDATE 1"
    finally:
        await conn.close()

    async with start_deployer() as deployer:
        dep = await deployer.wait_for(
            "demand", "rollout resumed to 60%", lambda d: d["weights"]["candidate"] == 60, timeout=60
        )
        assert dep["rollout"]["id"] == rollout_id and dep["rollout"]["pause_reason"] == "awaiting_approval"
        history = (await deployer.rollout("demand", rollout_id))["history"]
        timers = [h for h in history if h["action"] == "timer"]
        assert len(timers) == 1 and timers[0]["accepted"] and timers[0]["step_index"] == 1
        events = await deployer.deployment_events("deployment.paused")
        # Delivery is at-least-once: an event the first process published but had not marked published when it
        # stopped goes out again from the outbox (same id). A step entered twice would be a second event id.
        unique = {e["id"]: e for e in events if e["type"] == "deployment.rollout.step"}
        steps = sorted((e["data"]["step_index"], e["data"]["weights"]["candidate"]) for e in unique.values())
        assert steps == [(0, 20), (1, 20), (2, 60), (3, 60)]  # each step entered once, across the restart


async def test_gateway_keeps_answering_when_the_broker_is_slow_to_take_logs(
    start_deployer: Callable[[], AbstractAsyncContextManager[Deployer]],
) -> None:
    """The logging queue is bounded and never waited on: with it full, requests are still answered (rows dropped
    and counted), and logging recovers once it drains."""
    async with start_deployer() as deployer:
        await deployer.create(name="queue", model="queue-model", auto_deploy="auto")
        await deployer.register_version("queue-model", 1, linear(0.3))
        await deployer.wait_for("queue", "v1 serving", lambda d: d["stable_version"] == 1)
        batcher = deployer.service.runtime.parts.get(PredictionBatcher)
        batcher.max_queued_rows = 0  # a queue that is always full
        out = await deployer.predict("queue", {"instances": [{"age": 1.0, "bmi": 2.0, "heart_rate": 3.0}] * 5})
        assert len(out["predictions"]) == 5
        metrics = (await deployer.client.get("/metrics")).text
        assert 'vigil_gateway_log_dropped_rows_total{reason="queue_full"}' in metrics
        batcher.max_queued_rows = 1000
        sent = batcher.sent_events
        await deployer.predict("queue", {"features": {"age": 1.0, "bmi": 2.0, "heart_rate": 3.0}})

        async def flushed() -> bool:
            return bool(batcher.sent_events > sent)

        await eventually(flushed, what="logging resumed")
