"""Warming a candidate happens before the deployment's row lock is taken (review finding 10): a slow artifact load
must not block every other move on the deployment (verdicts, the rollout ticker, API calls) while it runs."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from deployer_support import Deployer, linear
from test_deployer_strategies import create_with_stable

from vigil.deployer.gateway import ModelCache

pytestmark = pytest.mark.integration


async def test_the_deployment_row_is_not_locked_while_the_candidate_warms(deployer: Deployer) -> None:
    await deployer.register_version("warm-model", 1, linear(0.5))
    await deployer.register_version("warm-model", 2, linear(-0.5))
    await create_with_stable(deployer, "warm", "warm-model", strategy="canary", steps=[{"kind": "analysis"}])

    models = deployer.service.runtime.parts.get(ModelCache)
    real_warm = models.warm
    warming, release = asyncio.Event(), asyncio.Event()

    async def slow_warm(digest: str) -> None:
        warming.set()
        await release.wait()
        await real_warm(digest)

    models.warm = slow_warm  # type: ignore[method-assign]
    start: asyncio.Task[Any] | None = None
    try:
        start = asyncio.create_task(
            deployer.client.post("/v1/deployments/warm/rollouts", json={"version": 2}, headers=deployer.h("deployer"))
        )
        await asyncio.wait_for(warming.wait(), 30)
        # While the candidate warms, another mover can take the row lock at once.
        async with deployer.service.runtime.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow("SELECT name FROM deployments WHERE name = 'warm' FOR UPDATE NOWAIT")
            except asyncpg.LockNotAvailableError:
                release.set()
                raise AssertionError("the deployment row is locked while the candidate warms") from None
            assert row is not None
        release.set()
        answer = await asyncio.wait_for(start, 30)
    finally:
        models.warm = real_warm  # type: ignore[method-assign]
        release.set()  # never leave the request (and its pooled connection) waiting, whatever failed above
        if start is not None and not start.done():
            start.cancel()
            await asyncio.wait({start})
    assert answer.status_code == 201, answer.text
    assert answer.json()["candidate_version"] == 2
