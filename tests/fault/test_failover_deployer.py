"""Two deployer instances behind one front; one is killed with SIGKILL in the middle of a canary rollout while
predictions flow through the front (issue #24 item 2).

The rollout's steps and timers live in Postgres, so the survivor carries the rollout on: v2 is promoted exactly once,
every step entered once (one ``deployment.rollout.step`` per step index), and the gateway keeps answering through
the front — a request cut with the killed instance's connection is asked again; none is answered wrongly. The pause
(kill → promoted, and the longest gap between answered predictions) goes to ``failover.json``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fault.failover_support import client, record, replica_stack
from integration.deployer.deployer_support import linear, row
from integration.trainer.trainer_support import read_events

from support.kafka import produce_events
from vigil.events import make_event, topics
from vigil.events.catalog.models import GateResult, ModelVersionRegistered
from vigil.service.settings import ServiceSettings
from vigil.stack.supervisor import RunningStack

pytestmark = [pytest.mark.fault]

MODEL = "fo-dmodel"
DEPLOYMENT = "fo-dep"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("failover-deployer")
    with replica_stack(home, {"deployer": 2}) as running:
        yield running


async def _register(stack: RunningStack, version: int, coef: float) -> None:
    """What the registry announces once a version passed its gates: the artifact in the stack's (encrypted) store."""
    digest = ServiceSettings(home=stack.paths.home).artifact_store().put(linear(coef).to_bytes())
    event = make_event(
        ModelVersionRegistered(
            model=MODEL,
            version=version,
            source="training",
            artifact_digest=digest,
            artifact_uri=f"vigil-artifact://{digest}",
            artifact_format="json",
            gates=[GateResult(gate="auc", kind="metric_floor", metric="auc", value=0.8, threshold=0.7, passed=True)],
            gate_policy_version=1,
        ),
        source="vigil://registry",
        actor="service:registry",
    )
    await produce_events(stack.bootstrap_servers, topics.MODELS, [event], key=MODEL.encode())


async def _deployment(c: httpx.AsyncClient) -> dict[str, Any] | None:
    try:
        r = await c.get(f"/v1/deployments/{DEPLOYMENT}")
    except httpx.TransportError:
        return None
    return dict(r.json()) if r.status_code == 200 else None


async def _until(probe, *, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (found := await probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
    return found


async def test_deployer_instance_killed_mid_rollout_promotes_once_and_keeps_serving(stack: RunningStack) -> None:
    body = {
        "name": DEPLOYMENT,
        "model": MODEL,
        "strategy": "canary",
        "auto_deploy": "auto",
        "min_samples": 10,
        "steps": [
            {"kind": "set_weight", "weight": 50},
            {"kind": "pause", "duration_s": 8},
            {"kind": "set_weight", "weight": 100},
        ],
    }
    async with client(stack, "deployer") as deployer:
        r = await deployer.post("/v1/deployments", json=body)
        assert r.status_code == 201, r.text

        async def stable(version: int) -> dict[str, Any] | None:
            dep = await _deployment(deployer)
            return dep if dep and dep["stable_version"] == version and dep["rollout"] is None else None

        await _register(stack, 1, 0.1)
        await _until(lambda: stable(1), timeout=90, what="v1 stable")
        await _register(stack, 2, 0.3)

        async def rolling() -> dict[str, Any] | None:
            dep = await _deployment(deployer)
            return dep if dep and dep["rollout"] is not None else None

        await _until(rolling, timeout=90, what="the v2 rollout")

        answered: list[tuple[float, int]] = []  # (time, version) of each answered prediction
        retried = 0
        stop = asyncio.Event()

        async def traffic() -> None:
            nonlocal retried
            i = 0
            while not stop.is_set():
                async with client(stack, "deployer") as c:  # a fresh connection: each goes to the next instance
                    try:
                        r = await c.post(f"/v1/deployments/{DEPLOYMENT}/predict", json={"features": row(i)})
                    except httpx.TransportError:
                        retried += 1
                        continue
                assert r.status_code == 200, r.text
                answered.append((time.monotonic(), int(r.json()["version"])))
                i += 1
                await asyncio.sleep(0.05)

        sender = asyncio.create_task(traffic())
        try:
            await asyncio.sleep(1.0)
            killed_at = time.monotonic()
            assert await asyncio.to_thread(stack.kill_service, "deployer-1") == -9
            await _until(lambda: stable(2), timeout=120, what="v2 promoted by the survivor")
            promoted_after = time.monotonic() - killed_at
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await sender

    events = await read_events(stack.bootstrap_servers, "", topics.DEPLOYMENTS)
    ours = [e for e in events if e.data.get("deployment") == DEPLOYMENT]
    started = [e for e in ours if e.type == "deployment.rollout.started" and e.data["candidate_version"] == 2]
    assert len(started) == 1
    rollout_id = started[0].data["rollout_id"]
    steps = Counter(
        e.data["step_index"] for e in ours if e.type == "deployment.rollout.step" and e.data["rollout_id"] == rollout_id
    )
    assert steps == Counter({0: 1, 1: 1, 2: 1}), steps
    promoted = [e for e in ours if e.type == "deployment.promoted" and e.data["version"] == 2]
    assert len(promoted) == 1
    after_kill = [t for t, _ in answered if t > killed_at]
    assert after_kill, "no prediction answered after the kill"
    assert {v for _, v in answered} <= {1, 2}
    gaps = [b - a for a, b in zip([killed_at, *after_kill[:-1]], after_kill, strict=True)]
    record(
        stack.paths.home,
        "deployer_kill_mid_rollout",
        {
            "kill_to_promoted_s": round(promoted_after, 3),
            "longest_gap_in_answers_after_kill_s": round(max(gaps), 3),
            "requests_cut_and_retried": retried,
            "answered": len(answered),
        },
    )
