"""Fixtures of the deployer's integration tests: a running deployer against the real broker and Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from deployer_support import Deployer, StartDeployer

from support.services import make_tokens, running, settings_for
from vigil.deployer.app import make_app
from vigil.deployer.settings import DeployerSettings


@pytest.fixture
def start_deployer(kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path) -> StartDeployer:
    """Start a deployer (again) on the test's database, topics and artifact store; a restart sees the same state."""
    tokens = make_tokens(tmp_path)
    artifact_root = tmp_path / "artifacts"
    settings = settings_for(
        DeployerSettings,
        dsn=fresh_db,
        bootstrap=kafka_bootstrap,
        prefix=topic_prefix,
        tokens=tokens,
        artifact_root=artifact_root,
        rollout_tick_interval_ms=100,
        gateway_log_flush_ms=100,
        gateway_max_rows=300,
        default_min_samples=100,
    )

    @asynccontextmanager
    async def start() -> AsyncIterator[Deployer]:
        async with running(make_app(settings)) as service:
            yield Deployer(service, tokens, kafka_bootstrap, topic_prefix, artifact_root, settings)

    return start


@pytest.fixture
async def deployer(start_deployer: StartDeployer) -> AsyncIterator[Deployer]:
    async with start_deployer() as service:
        yield service
