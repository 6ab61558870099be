"""The gateway's serving state lives in memory and still holds a rollback from the next request on.

Every change to what a deployment serves NOTIFYs the new route in its transaction (``vigil.deployer.serving_state``):
a request sent once the commit's notification has been delivered is answered the new way; a change whose
notification was lost is picked up by the fallback reload; the commit → applied lag is measured and printed.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import asyncpg
import pytest
from deployer_support import Deployer, linear, row

from support.services import eventually
from vigil.deployer import store
from vigil.deployer.serving_state import ServingState
from vigil.events.catalog.common import Evidence

pytestmark = pytest.mark.integration


async def _canary_at_100(deployer: Deployer, name: str) -> str:
    """``name`` serves v1 as stable and v2 as a candidate at 100 % (behind a manual gate); returns the rollout id."""
    model = f"{name}-model"
    await deployer.register_version(model, 1, linear(0.5))
    await deployer.register_version(model, 2, linear(-0.5))

    async def created() -> bool:
        r = await deployer.client.post(
            "/v1/deployments",
            json={
                "name": name,
                "model": model,
                "stable_version": 1,
                "steps": [{"kind": "set_weight", "weight": 100}, {"kind": "pause"}],
            },
            headers=deployer.h("deployer"),
        )
        return r.status_code == 201

    await eventually(created, what="deployment created once v1 is known")

    async def started() -> str | None:
        r = await deployer.client.post(
            f"/v1/deployments/{name}/rollouts", json={"version": 2}, headers=deployer.h("deployer")
        )
        return str(r.json()["rollout"]["id"]) if r.status_code == 201 else None

    rollout_id: str = await eventually(started, what="rollout of v2 started once v2 is known")
    # Read-your-writes: the API refreshed this gateway's state before answering, no NOTIFY needed.
    assert (await deployer.predict(name, {"features": row(1)}))["version"] == 2
    return rollout_id


async def test_a_rollback_holds_from_the_first_request_after_its_notification(deployer: Deployer) -> None:
    rollout_id = await _canary_at_100(deployer, "hold")
    heard: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
    listener = await asyncpg.connect(deployer.settings.database_url)
    try:
        await listener.add_listener(
            store.serving_channel("deployer"), lambda *args: heard.put_nowait((time.perf_counter(), args[3]))
        )
        evidence = [Evidence(statistic="auc", value=0.6, threshold=0.7, operator="lt", breached=True, sample_size=500)]
        await deployer.rollback_requested(
            "hold", "hold-model", rollout_id=rollout_id, candidate_version=2, evidence=evidence
        )
        while True:  # the rollback's commit announces the route without the candidate
            heard_at, payload = await asyncio.wait_for(heard.get(), 30)
            if '"candidate_version":null' in payload and '"name":"hold"' in payload:
                break
        # The gateway's own listener gets the same notification on its own connection, a moment earlier or later
        # (a loaded machine decides which socket is read first): wait for it to have applied the route — nothing
        # else is waited for — and the very next request must be answered by stable, from no cache but that route.
        serving = deployer.service.runtime.parts.get(ServingState)

        async def applied() -> bool:
            route = serving._routes.get("hold")
            return route is not None and route.candidate_version is None

        await eventually(applied, what="the gateway applied the rollback's notification", interval=0.001)
        answer = await deployer.predict("hold", {"features": row(1)})
        assert answer["version"] == 1 and answer["variant"] == "stable"
    finally:
        await listener.close()
    lag_ms = (serving.applied_at["hold"] - heard_at) * 1000
    print(f"rollback: gateway applied the route {lag_ms:+.2f} ms after the test's own listener heard it")


async def test_a_lost_notification_is_repaired_by_the_fallback_reload(deployer: Deployer) -> None:
    await _canary_at_100(deployer, "lost")
    # A change committed without its NOTIFY (as if the notification were lost): only the reload can see it.
    async with deployer.service.runtime.pool.acquire() as conn:
        await conn.execute(
            "UPDATE deployments SET candidate_weight = 0, serving_seq = serving_seq + 1 WHERE name = 'lost'"
        )

    async def stable_answers() -> bool:
        return (await deployer.predict("lost", {"features": row(2)}))["version"] == 1

    started = time.perf_counter()
    await eventually(stable_answers, what="the fallback reload applied the change", interval=0.05)
    waited = time.perf_counter() - started
    assert waited < deployer.settings.serving_refresh_interval_ms / 1000 + 5  # bounded by the reload interval


async def test_commit_to_applied_lag(deployer: Deployer) -> None:
    """Serving-state writes committed one after another: how long until this gateway applied each (printed)."""
    await _canary_at_100(deployer, "lag")
    serving = deployer.service.runtime.parts.get(ServingState)
    lags: list[float] = []
    for i in range(40):
        weight = 100 - i % 2
        async with deployer.service.runtime.pool.acquire() as conn:
            async with conn.transaction():
                dep = await store.get_deployment(conn, "lag", lock=True)
                assert dep is not None
                await store.set_serving(
                    conn,
                    "lag",
                    stable_version=dep["stable_version"],
                    candidate_version=dep["candidate_version"],
                    candidate_weight=weight,
                    mirror=dep["mirror"],
                    previous_version=dep["previous_version"],
                    rollout_id=dep["rollout_id"],
                    last_rollout_id=dep["last_rollout_id"],
                )
            committed = time.perf_counter()
        for _ in range(1000):
            route = await serving.route("lag")
            if route is not None and route.candidate_weight == weight:
                break
            await asyncio.sleep(0.0005)
        else:
            pytest.fail("the gateway never applied the change")
        lags.append(max(0.0, serving.applied_at["lag"] - committed) * 1000)
    lags.sort()
    print(
        f"commit -> applied: p50 {statistics.median(lags):.2f} ms, p99 {lags[int(0.99 * len(lags))]:.2f} ms,"
        f" max {lags[-1]:.2f} ms over {len(lags)} commits"
    )
