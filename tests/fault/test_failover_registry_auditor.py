"""Two instances of the registry and of the auditor behind one front each (``vigil up --replicas``), one instance
killed with SIGKILL while events flow (issue #24 item 2).

- **The front**: ``vigil status`` lists every instance and front; fresh connections to a front reach both
  instances; with one instance killed, every new connection to the front is answered (by the survivor).
- **Auditor**: control-plane events stream onto the bus over both partitions; the auditor instance owning one
  partition is killed mid-stream. Its partition moves to the survivor, which catches up: every event sent is in
  the audit chain exactly once (entries = events published), and the chain verifies.
- **Outbox relay leader**: data announcements go through the registry's front while a watcher finds the registry
  instance holding the relay's lock (pg_locks → the connection's port → the process) and kills it while it
  publishes. The survivor's relay publishes what was left: every outbox row is on the bus, and the auditor (one
  consumer group over both) records each event once — whatever the broker saw twice.

The pause each kill causes (send → recorded in the chain) is measured and written to ``failover.json``; timings are
never asserted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fault.failover_support import (
    assigned_partitions,
    client,
    owner_of_connection,
    pause_figures,
    record,
    relay_lock_holder_port,
    replica_stack,
    topic_ids,
)

from support.signing import signed_headers
from vigil.demo import loop
from vigil.events import make_event, topics
from vigil.events.catalog.common import Window
from vigil.events.catalog.monitoring import MonitorWindow
from vigil.stack.status import stack_status
from vigil.stack.supervisor import RunningStack
from vigil.trainer.examples import patient_risk

pytestmark = [pytest.mark.fault]

ACTOR = "system:failover"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("failover-ra")
    # One signing key file for both auditors: a checkpoint one signs must verify on the other.
    env = {"VIGIL_AUDIT_SIGNING_KEY_FILE": str(home / "auditor" / "signing.key")}
    with replica_stack(home, {"registry": 2, "auditor": 2}, env) as running:
        yield running


@pytest.fixture
async def auditor(stack: RunningStack) -> AsyncIterator[httpx.AsyncClient]:
    async with client(stack, "auditor") as c:
        yield c


async def _entries(auditor: httpx.AsyncClient, **filters: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = 0
    while True:
        for attempt in range(5):  # a connection the front handed to the killed instance: ask again
            try:
                r = await auditor.get("/v1/entries", params={**filters, "limit": 500, "after": after})
                break
            except httpx.TransportError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2)
        r.raise_for_status()
        page = r.json()
        items.extend(page["items"])
        if not page.get("next"):
            return items
        after = int(page["next"])


async def _wait_all_recorded(auditor: httpx.AsyncClient, ids: set[str], *, timeout: float) -> list[dict[str, Any]]:
    """Until every id in ``ids`` has an entry; returns the entries of those ids (all of them, duplicates too)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = [e for e in await _entries(auditor) if e["event_id"] in ids]
        if {e["event_id"] for e in entries} >= ids or time.monotonic() > deadline:
            return entries
        await asyncio.sleep(0.5)


def _control_event(i: int) -> tuple[str, bytes, bytes]:
    """(event id, key, bytes) of one small control-plane event (``monitor.window``: each one is its own chained
    entry; stream records are only digested) that no running service but the auditor consumes. Keys vary so both
    partitions get records."""
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i)
    deployment = f"failover-{i % 7}"
    envelope = make_event(
        MonitorWindow(
            deployment=deployment,
            model="m",
            version=1,
            variant="stable",
            window=Window(start=start, end=start + timedelta(minutes=1)),
            predictions=i,
            labels=0,
        ),
        source="test://failover",
        actor=ACTOR,
    )
    return envelope.id, deployment.encode(), envelope.canonical_bytes()


async def _get_retrying(c: httpx.AsyncClient, path: str) -> httpx.Response:
    for attempt in range(5):
        try:
            return await c.get(path)
        except httpx.TransportError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


async def test_status_lists_instances_and_fronts_spread_connections(stack: RunningStack) -> None:
    report = await asyncio.to_thread(stack_status, stack.paths.home)
    assert report["healthy"], report
    assert sorted(s["name"] for s in report["services"]) == ["auditor-1", "auditor-2", "registry-1", "registry-2"]
    assert sorted(f["name"] for f in report["fronts"]) == ["auditor", "registry"]
    assert all(s["pid"] for s in report["services"])
    # Each fresh connection goes to the next instance: both count requests of the route asked through the front.
    for _ in range(4):
        async with client(stack, "registry") as c:
            assert (await c.get("/v1/datasets")).status_code == 200
    served = []
    for svc in stack.instances("registry"):
        async with httpx.AsyncClient(base_url=svc.url, trust_env=False, timeout=10.0) as c:
            text = (await c.get("/metrics")).text
        served.append(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("vigil_http_requests_total{") and 'route="/v1/datasets"' in line
            )
        )
    assert sum(served) == 4 and all(n >= 1 for n in served), served


async def test_auditor_instance_killed_mid_stream_loses_and_doubles_nothing(
    stack: RunningStack, auditor: httpx.AsyncClient
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap_servers)
    await producer.start()
    sent: dict[str, float] = {}  # event id → wall time it was acked by the broker
    try:
        # Warm-up until each auditor consumes a partition of vigil.monitoring (the group has settled on two members).
        for i in range(200):
            event_id, key, raw = _control_event(i)
            sent[event_id] = time.time()
            await producer.send_and_wait(topics.MONITORING, raw, key=key, headers=signed_headers(raw))
            await asyncio.sleep(0.05)
            # Both: an instance shows a partition only once a record arrived on it after the group settled.
            if i % 10 == 9 and all(
                [await assigned_partitions(stack, f"auditor-{n}", topics.MONITORING) for n in (1, 2)]
            ):
                break
        victim_partitions = await assigned_partitions(stack, "auditor-1", topics.MONITORING)
        assert await assigned_partitions(stack, "auditor-2", topics.MONITORING), "auditor-2 never got a partition"
        assert victim_partitions, "auditor-1 owns no partition of vigil.monitoring: the kill would move nothing"
        await _wait_all_recorded(auditor, set(sent), timeout=60)

        before_kill = dict(sent)
        killed_at = time.time()
        code = await asyncio.to_thread(stack.kill_service, "auditor-1")
        assert code == -9
        for _ in range(6):  # new connections to the front all reach the survivor
            async with httpx.AsyncClient(base_url=stack.url("auditor"), trust_env=False, timeout=10.0) as fresh:
                assert (await fresh.get("/healthz")).status_code == 200
        acks = []
        for i in range(200, 400):  # ~10 s of events after the kill: the survivor must take them all
            event_id, key, raw = _control_event(i)
            # not waiting for each ack: a steady rate
            acks.append(await producer.send(topics.MONITORING, raw, key=key, headers=signed_headers(raw)))
            sent[event_id] = time.time()
            await asyncio.sleep(0.05)
        await asyncio.gather(*acks)
    finally:
        await producer.stop()

    entries = await _wait_all_recorded(auditor, set(sent), timeout=120)
    counts = Counter(e["event_id"] for e in entries)
    assert set(counts) == set(sent), f"{len(set(sent) - set(counts))} events never audited"
    assert [k for k, n in counts.items() if n > 1] == [], "an event audited twice"
    assert len(entries) == len(sent)
    verify = (await _get_retrying(auditor, "/v1/verify")).json()
    assert verify["ok"], verify
    survivor = await assigned_partitions(stack, "auditor-2", topics.MONITORING)
    assert victim_partitions <= survivor, (victim_partitions, survivor)

    recorded = {e["event_id"]: datetime.fromisoformat(e["recorded_at"]).timestamp() for e in entries}
    lat_before = [recorded[i] - t for i, t in before_kill.items()]
    lat_after = [recorded[i] - t for i, t in sent.items() if i not in before_kill]
    first_after = min(t for i, t in sent.items() if i not in before_kill)
    figures = pause_figures(lat_before, lat_after) | {
        "events": len(sent),
        "events_after_kill": len(lat_after),
        "kill_to_first_event_s": round(first_after - killed_at, 3),
        "moved_partitions": sorted(victim_partitions),
    }
    record(stack.paths.home, "auditor_kill", figures)
    # Back to two instances for the next test.
    await asyncio.to_thread(stack.start_service, "auditor-1", ready_timeout=120.0)


async def test_outbox_relay_leader_killed_publishes_every_row_once_in_effect(
    stack: RunningStack, auditor: httpx.AsyncClient
) -> None:
    data_dir = stack.paths.home / "data"
    data_dir.mkdir(exist_ok=True)
    conn = await asyncpg.connect(stack.database_url)
    stop = asyncio.Event()
    killed: dict[str, Any] = {}
    accepted: dict[str, float] = {}  # data.updated event id → wall time the registry answered

    async def watch_and_kill() -> None:
        """Find the instance holding the registry relay's lock while it publishes, and kill it there."""
        while not stop.is_set() and not killed:
            port = await relay_lock_holder_port(conn, "registry")
            holder = owner_of_connection(stack, port) if port else None
            if holder is not None and len(accepted) >= 10:
                killed["at"] = time.time()
                killed["instance"] = holder.name
                killed["code"] = await asyncio.to_thread(holder.kill)
                return
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch_and_kill())
    try:
        async with client(stack, "registry") as registry:
            after_kill = 0
            for n in range(200):
                body = patient_risk.write_dataset(data_dir / f"d{n}.csv", rows=40, seed=n) | {
                    "dataset": f"failover-{uuid.uuid4().hex[:8]}"
                }
                for attempt in range(5):  # a request cut by the kill is asked again, through the front
                    try:
                        accepted[await loop.announce(registry, stack.admin_token, body)] = time.time()
                        break
                    except httpx.TransportError:
                        if attempt == 4:
                            raise
                        await asyncio.sleep(0.2)
                if killed:
                    after_kill += 1
                    if after_kill >= 40:
                        break
    finally:
        stop.set()
        await watcher
    assert killed, "no registry instance was seen holding the relay lock"
    assert killed["code"] == -9

    rows = await conn.fetch("SELECT event_id, topic, publish_count, published_at FROM registry.outbox")
    await conn.close()
    outbox_ids = {r["event_id"] for r in rows}
    assert set(accepted) <= outbox_ids

    async def all_published() -> bool:
        c2 = await asyncpg.connect(stack.database_url)
        try:
            return not await c2.fetchval("SELECT count(*) FROM registry.outbox WHERE published_at IS NULL")
        finally:
            await c2.close()

    deadline = time.monotonic() + 90
    while not await all_published():
        assert time.monotonic() < deadline, "the survivor's relay left rows unpublished"
        await asyncio.sleep(0.5)

    on_bus: Counter[str] = Counter()
    for topic in {r["topic"] for r in rows}:
        on_bus.update(i for i in await topic_ids(stack.bootstrap_servers, topic) if i in outbox_ids)
    assert set(on_bus) == outbox_ids, f"{len(outbox_ids - set(on_bus))} outbox rows never reached the bus"
    sent_twice = sorted(i for i, n in on_bus.items() if n > 1)

    entries = await _wait_all_recorded(auditor, outbox_ids, timeout=120)
    counts = Counter(e["event_id"] for e in entries)
    assert set(counts) == outbox_ids
    assert [k for k, n in counts.items() if n > 1] == [], "an outbox row applied twice by the auditor"

    recorded = {e["event_id"]: datetime.fromisoformat(e["recorded_at"]).timestamp() for e in entries}
    lat_before = [recorded[i] - t for i, t in accepted.items() if t < killed["at"]]
    lat_after = [recorded[i] - t for i, t in accepted.items() if t >= killed["at"]]
    record(
        stack.paths.home,
        "registry_relay_leader_kill",
        pause_figures(lat_before, lat_after)
        | {
            "killed": killed["instance"],
            "announcements": len(accepted),
            "outbox_rows": len(outbox_ids),
            "rows_on_bus_twice": len(sent_twice),
        },
    )
