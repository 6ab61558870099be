"""Two of every service at once, the closed loop running, one instance of each killed with SIGKILL in turn (issue #24
item 2).

One stack: registry, scheduler, trainer, deployer, monitor and auditor, two processes each behind one front per
service (``vigil up --replicas 2``), with its own broker and Postgres. The loop is driven as in
``test_loop_faults.py`` (:class:`fault.loop_fault_support.LoopHarness`, over the fronts):

1. a baseline round (dataset v1 → trained → registered → serving) and labelled traffic;
2. a round with four kills as it moves: the registry instance holding the outbox relay's lock (or instance 1 when
   none is seen at that moment) as v2 is announced, a scheduler instance once v2's job exists, the trainer holding
   the run's lease mid-training, a deployer instance mid-rollout;
3. traffic and labels with the monitor owning the canary's predictions partition killed, and an auditor instance;
4. a round on the survivors alone (one instance of each service left);
5. the outcome: every decision once, nothing lost, the monitor's windows count exactly what was logged and labelled,
   and the audit chain holds exactly the events published on the control-plane topics — each once — and verifies.

Killed instances are not started again: the partitions move, the survivor catches up. The pause each kill causes
(kill → the loop's next step observed done) is measured, never asserted, and goes to ``failover.json``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest
from aiokafka.partitioner import murmur2
from fault.failover_support import (
    assigned_partitions,
    owner_of_connection,
    record,
    relay_lock_holder_port,
    replica_stack,
    topic_records,
)
from fault.loop_fault_support import DEPLOYMENT, WINDOW_S, Fault, LoopHarness, expected_window_counts, logged_batches

from vigil.events import topics
from vigil.stack.supervisor import RunningStack
from vigil.trainer.examples import patient_risk

pytestmark = pytest.mark.fault

SERVICES = ("registry", "scheduler", "trainer", "deployer", "monitor", "auditor")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("failover-all")
    # One signing key file for both auditors: a checkpoint one signs must verify on the other.
    env = {"VIGIL_AUDIT_SIGNING_KEY_FILE": str(home / "auditor" / "signing.key")}
    with replica_stack(home, dict.fromkeys(SERVICES, 2), env) as running:
        yield running


@pytest.fixture(scope="module")
async def harness(stack: RunningStack) -> AsyncIterator[LoopHarness]:
    h = LoopHarness(stack, stack.paths.home / "data")
    h.data_dir.mkdir(parents=True, exist_ok=True)
    yield h
    await h.aclose()


async def _kill(h: LoopHarness, key: str, **detail: Any) -> tuple[Fault, float]:
    """SIGKILL one instance; the harness's kept connections to that service are dropped (they may lead to it)."""
    code = await asyncio.to_thread(h.stack.kill_service, key)
    killed_at = time.monotonic()
    assert code == -9, f"{key} exited with {code}"
    service = h.stack.services[key].launch.name
    if service in h._clients:
        await h._clients.pop(service).aclose()
    fault = Fault("kill -9", key, detail)
    h.ledger.faults.append(fault)
    return fault, killed_at


async def _settled(h: LoopHarness, probe: Callable[[], Awaitable[Any]], *, timeout: float, what: str) -> Any:
    """``h.until`` that also takes an AssertionError from a paginated read cut by a kill as "not yet"."""

    async def guarded() -> Any:
        try:
            return await probe()
        except AssertionError:
            return None

    return await h.until(guarded, timeout=timeout, what=what)


async def test_01_baseline_round_on_two_of_everything(harness: LoopHarness) -> None:
    started = time.monotonic()
    await harness.configure()
    await harness.announce(1, via="http")
    await harness.wait_serving(1, timeout=240)
    served = await harness.serve(100, seed=21)
    await harness.label(served, seed=21)
    harness.ledger.figures["baseline_round_s"] = round(time.monotonic() - started, 1)


async def test_02_a_round_with_registry_scheduler_trainer_deployer_killed_in_turn(
    harness: LoopHarness, stack: RunningStack
) -> None:
    h = harness
    known_jobs = {j["id"] for j in await h.jobs()}
    known_runs = {r["run_id"] for r in await h.runs()}

    # registry: whoever publishes the outbox as v2 is announced (watched for up to 2 s), else instance 1
    conn = await asyncpg.connect(stack.database_url)
    try:
        await h.announce(2, via="http")
        victim = None
        deadline = time.monotonic() + 2.0
        while victim is None and time.monotonic() < deadline:
            port = await relay_lock_holder_port(conn, "registry")
            victim = owner_of_connection(stack, port) if port else None
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    key = victim.name if victim is not None else "registry-1"
    fault, killed_at = await _kill(h, key, relay_lock_holder=victim is not None)

    async def new_job() -> dict[str, Any] | None:
        return next((j for j in await h.jobs() if j["id"] not in known_jobs), None)

    job = await _settled(h, new_job, timeout=120, what="the scheduler's job for v2")
    fault.recovered_s = round(time.monotonic() - killed_at, 1)  # registry kill → the next step (a job) done

    # scheduler: the one owning the job's partition is not visible from outside; instance 1 (it owns one of two)
    fault, killed_at = await _kill(h, "scheduler-1", job_state_at_kill=job["state"])

    async def running_run() -> dict[str, Any] | None:
        return next((r for r in await h.runs() if r["run_id"] not in known_runs and r["state"] == "running"), None)

    run = await _settled(h, running_run, timeout=120, what="the v2 training run running")
    fault.recovered_s = round(time.monotonic() - killed_at, 1)

    # trainer: the instance holding the run's lease, mid-training
    holder_pid = int(run["worker"].split(":")[1])
    (holder,) = [s for s in stack.instances("trainer") if s.pid == holder_pid]
    fault, killed_at = await _kill(h, holder.name, run_id=run["run_id"], lease_holder=True)

    async def rolling() -> dict[str, Any] | None:  # or already over: a poll may miss a 1 s pause on a busy host
        dep = await h.deployment()
        if dep and dep["rollout"] is not None and dep["rollout"]["candidate_version"] == 2:
            return dep
        return dep if dep and dep["stable_version"] == 2 else None

    dep = await _settled(h, rolling, timeout=180, what="the v2 rollout started")
    fault.recovered_s = round(time.monotonic() - killed_at, 1)

    # deployer: instance 1, mid-rollout when caught in time (its durable timers move to the survivor)
    fault, killed_at = await _kill(h, "deployer-1", mid_rollout=dep["rollout"] is not None)
    await h.wait_serving(2, timeout=180)
    fault.recovered_s = round(time.monotonic() - killed_at, 1)


async def test_03_monitor_owning_the_canary_and_an_auditor_killed_while_labels_stream(
    harness: LoopHarness, stack: RunningStack
) -> None:
    h = harness
    part = (murmur2(DEPLOYMENT.encode()) & 0x7FFFFFFF) % 2
    served = await h.serve(200, seed=31)
    # The canary's owner: the one instance that consumed from its predictions partition (instance 1 when both did
    # — an early rebalance — and the detail says so).
    owners = [
        s.name
        for s in stack.instances("monitor")
        if part in await assigned_partitions(stack, s.name, topics.PREDICTIONS)
    ]
    victim = owners[0] if len(owners) == 1 else "monitor-1"
    await h.label(served[:100], seed=31)
    fault, killed_at = await _kill(h, victim, canary_partition=part, owner_seen=len(owners) == 1)
    await h.label(served[100:], seed=31)
    fault2, killed_at2 = await _kill(h, "auditor-1")

    served_ids = {s.prediction_id for s in h.ledger.served}

    async def all_logged() -> list[tuple[str, dict[str, Any]]] | None:  # the gateway logs in the background
        found = await logged_batches(stack.bootstrap_servers, idle_s=1.5)
        return found if served_ids <= {i for _, b in found for i in b["prediction_ids"]} else None

    batches = await _settled(h, all_logged, timeout=90, what="every served prediction logged")
    want = expected_window_counts(batches, h.ledger.labelled, WINDOW_S)

    async def windows_counted() -> dict[Any, Any] | None:
        got = {
            (int(w["figures"]["version"]), w["figures"]["variant"], w["figures"]["start"]): (
                int(w["figures"]["predictions"]),
                int(w["figures"]["labels"]),
            )
            for w in await h.windows()
        }
        return got if got == want else None

    try:
        await _settled(h, windows_counted, timeout=120, what="the windows to count exactly what was logged")
    except TimeoutError:
        got = {(int(w["figures"]["version"]), w["figures"]["variant"], w["figures"]["start"]): (
            int(w["figures"]["predictions"]), int(w["figures"]["labels"])) for w in await h.windows()}  # fmt: skip
        pytest.fail(f"windows {got}, want {want}")
    fault.recovered_s = round(time.monotonic() - killed_at, 1)
    h.ledger.figures["windows"] = len(want)
    if len(owners) == 1:  # the canary's partition moved: the survivor consumed the labels sent to it after the kill
        (survivor,) = [m.name for m in stack.instances("monitor") if m.name != victim]
        assert part in await assigned_partitions(stack, survivor, topics.LABELS)

    async def audited_window_events() -> bool:
        entries = await h.audit_entries(type="monitor.window")
        return len(entries) >= len(want)

    await _settled(h, audited_window_events, timeout=120, what="the surviving auditor chaining the windows")
    fault2.recovered_s = round(time.monotonic() - killed_at2, 1)


async def test_04_a_round_on_the_survivors_alone(harness: LoopHarness, stack: RunningStack) -> None:
    alive = Counter(s.launch.name for s in stack.services.values() if s.pid is not None)
    assert alive == Counter(dict.fromkeys(SERVICES, 1)), alive
    started = time.monotonic()
    await harness.announce(3, via="http")
    await harness.wait_serving(3, timeout=240)
    harness.ledger.figures["survivors_round_s"] = round(time.monotonic() - started, 1)


async def test_05_every_decision_once_and_the_audit_equals_the_bus(harness: LoopHarness, stack: RunningStack) -> None:
    h = harness
    versions = sorted(h.ledger.dataset_versions)
    n = len(versions)
    assert versions == [1, 2, 3]
    datasets = await h.get_all("registry", f"/v1/datasets/{patient_risk.DATASET}/versions")
    assert [d["version"] for d in datasets] == versions
    models = await h.get_all("registry", "/v1/models/patient-risk-clf/versions")
    assert sorted(m["version"] for m in models) == versions
    jobs = await h.jobs()
    assert len(jobs) == n and {j["state"] for j in jobs} == {"succeeded"}, jobs
    runs = await h.runs()
    assert Counter(r["state"] for r in runs) == Counter({"succeeded": n, "lost": 1}), runs
    rollouts = await h.get_all("deployer", f"/v1/deployments/{DEPLOYMENT}/rollouts")
    assert sorted(r["candidate_version"] for r in rollouts) == versions[1:]
    assert {r["phase"] for r in rollouts} == {"promoted"}

    # The audit chain against the bus: per control-plane topic, the ids published equal the ids chained, and no
    # id is chained twice (a redelivery after a kill is absorbed by the survivor's unique event ids).
    published = {t: {str(r["id"]) for r in await topic_records(stack.bootstrap_servers, t, idle_s=1.5) if "id" in r}
                 for t in topics.CONTROL_PLANE}  # fmt: skip

    async def chained() -> list[dict[str, Any]] | None:
        entries = await h.audit_entries()
        have = {e["event_id"] for e in entries}
        return entries if all(ids <= have for ids in published.values()) else None

    entries = await _settled(h, chained, timeout=120, what="the audit chain to hold every published event")
    assert [i for i, k in Counter(e["event_id"] for e in entries).items() if k > 1] == []
    for topic, ids in published.items():
        assert {e["event_id"] for e in entries if e["topic"] == topic} == ids, topic
    report = await h.get("auditor", "/v1/verify")
    assert report is not None and report["ok"] is True, report

    record(
        stack.paths.home,
        "all_services_two_each",
        {
            "kills": [
                {"instance": f.target, **f.detail, "kill_to_next_step_s": f.recovered_s} for f in h.ledger.faults
            ],
            "rounds": n,
            "audit_entries": len(entries),
            "published_control_events": sum(len(ids) for ids in published.values()),
            **h.ledger.figures,
        },
    )
