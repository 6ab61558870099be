"""A network partition between one instance and the broker (issue #24 item 2): the instance keeps Postgres, loses
the broker, and comes back. Nothing may be applied twice; what an outbox relay publishes may reach the bus twice
(measured) but takes effect once.

One instance of the registry and one of the monitor run inside a network namespace (tests/support/netns.py); the
broker and Postgres listen on two host-side addresses of its veth pair, so the cut is a pair of blackhole routes to
the broker's address alone: the instance's Postgres connections — its pool, its window row locks, its relay's
transaction and advisory lock — carry on, while its open Kafka connections go silent (packets dropped both ways,
nothing refused or reset, as across a real partition) and new ones fail at once (the route inside says no).

- **Monitor**: the instance inside owns the canary's predictions partition; it is cut while batches stream in. The
  group evicts it after the session timeout, the survivor takes the partition over and applies what the cut one
  could not; after the heal the cut instance rejoins and consumes again. Every window counts exactly the rows sent
  into it, and each window revision's ``monitor.window`` event is on the bus exactly once.
- **Outbox relay**: the registry instance inside is cut, then seen taking its relay's lock (a transaction-scoped
  advisory lock) with rows to publish. Its sends cannot reach the broker, so it holds the lock — and with it the
  whole outbox — until its producer's request times out (30 s), rolls back, and mostly takes the lock again at
  once: the survivor publishes only in the gaps it wins, if any. Measured, not asserted: the share of the cut the
  cut instance held the lock, the rows still pending at the heal, and the rows on the bus twice (the relay rolls a
  batch back at its first failed send while the batch's other records are still queued in the producer, which
  delivers them after the heal: a bug, docs/faults.md). Asserted: after the heal every row is on the bus, and the
  auditor (a consumer with an inbox) chained each announcement exactly once.

Timings go to ``failover.json`` (measured, never asserted). Skipped only where namespaces cannot be made (not root,
no ``ip``).
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka.partitioner import murmur2
from fault.failover_support import (
    assigned_partitions,
    audit_entries,
    record,
    relay_lock_holder_addr,
    replica_stack,
    topic_positions,
    topic_records,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "monitor"))

from monitor_support import batch, reference, registered

from support.kafka import produce_events
from support.netns import Namespace, network_namespace, unavailable
from vigil.demo import loop
from vigil.events import topics
from vigil.monitor.state import WindowState
from vigil.stack.supervisor import RunningStack
from vigil.trainer.examples import patient_risk

pytestmark = [pytest.mark.fault, pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]

MODEL = "m-cut"
WINDOW_S = 15.0
PARTITIONS = 2
ROWS = 150
INSIDE = ("registry-2", "monitor-2")
CUT_S = 65.0  # > 2 × the producer's request timeout (30 s): long enough to see the lock let go and taken again


@pytest.fixture(scope="module")
def netns() -> Iterator[Namespace]:
    with network_namespace() as space:
        yield space


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, netns: Namespace) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("partition-broker")
    env = {"VIGIL_WINDOW_S": str(WINDOW_S), "VIGIL_WINDOW_GRACE_S": "2"}
    with replica_stack(home, {"registry": 2, "monitor": 2, "auditor": 1}, env, netns=netns, inside=INSIDE) as running:
        yield running


def _partition(key: str) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


async def _consumed(stack: RunningStack, key: str, topic: str) -> float:
    """Records of ``topic`` the instance ``key`` has consumed since it started (any outcome)."""
    async with httpx.AsyncClient(base_url=stack.services[key].url, timeout=10.0, trust_env=False) as c:
        text = (await c.get("/metrics")).text
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("vigil_events_consumed_total{") and f'topic="{topic}"' in line
    )


async def _predictions(conn: asyncpg.Connection, deployment: str) -> int:
    rows = await conn.fetch("SELECT state FROM monitor.window_state WHERE deployment = $1", deployment)
    return sum(WindowState.from_bytes(bytes(r["state"]), None).predictions for r in rows)


async def _until_applied(conn: asyncpg.Connection, deployment: str, want: int, *, timeout: float) -> float:
    """Wall time at which the window states of ``deployment`` first held ``want`` predictions."""
    deadline = time.monotonic() + timeout
    while (n := await _predictions(conn, deployment)) < want:
        assert time.monotonic() < deadline, f"only {n} of {want} predictions applied"
        await asyncio.sleep(0.1)
    return time.time()


def _gap(copies: list[tuple[str, int, int]]) -> int:
    """Offsets between the first and the last copy of a record (copies of one key share a partition)."""
    return max(o for _, _, o in copies) - min(o for _, _, o in copies)


def _window_of(at: datetime) -> datetime:
    return datetime.fromtimestamp(math.floor(at.timestamp() / WINDOW_S) * WINDOW_S, UTC)


async def test_monitor_cut_from_the_broker_applies_no_window_twice(stack: RunningStack, netns: Namespace) -> None:
    bootstrap = stack.bootstrap_servers
    await produce_events(bootstrap, topics.MODELS, [registered(MODEL, 1, reference())], key=MODEL.encode())
    warm_at = datetime.now(UTC)
    for i in range(80):  # until monitor-2 (inside, the later member) consumes a partition: the group has settled
        envelope, _, _ = batch(f"cwarm-{i}", MODEL, 1, "stable", warm_at, 5, seed=700 + i)
        await produce_events(bootstrap, topics.PREDICTIONS, [envelope], key=f"cwarm-{i}".encode())
        await asyncio.sleep(0.25)
        if await assigned_partitions(stack, "monitor-2", topics.PREDICTIONS):
            break
    inside = await assigned_partitions(stack, "monitor-2", topics.PREDICTIONS)
    assert inside, "monitor-2 (in the namespace) never got a partition"
    # The canary's name is chosen so that its partition is the cut instance's.
    deployment = next(d for k in range(200) if _partition(d := f"canary-cut-{k}") in inside)
    part = _partition(deployment)

    sent: list[tuple[datetime, int]] = []  # (the batch's event time, rows)
    conn = await asyncpg.connect(stack.database_url)
    try:

        async def send(seed: int) -> None:
            at = datetime.now(UTC)
            envelope, _, _ = batch(deployment, MODEL, 1, "stable", at, ROWS, seed=seed)
            await produce_events(bootstrap, topics.PREDICTIONS, [envelope], key=deployment.encode())
            sent.append((at, ROWS))

        consumed_before = await _consumed(stack, "monitor-2", topics.PREDICTIONS)
        for i in range(3):
            await send(i)
            await asyncio.sleep(0.5)
        await _until_applied(conn, deployment, 3 * ROWS, timeout=60)
        # The instance inside consumed them: it owns the canary's partition when the cut comes.
        assert await _consumed(stack, "monitor-2", topics.PREDICTIONS) >= consumed_before + 3

        netns.cut(netns.broker_ip)
        cut_at = time.time()
        try:
            for i in range(3, 8):  # the cut instance cannot fetch these; the survivor must, once it has the partition
                await send(i)
                await asyncio.sleep(1.0)
            applied_at = await _until_applied(conn, deployment, 8 * ROWS, timeout=120)
            survivor_parts = await assigned_partitions(stack, "monitor-1", topics.PREDICTIONS)
            consumed_at_heal = await _consumed(stack, "monitor-2", topics.PREDICTIONS)
        finally:
            netns.heal(netns.broker_ip)
        healed_at = time.time()
        assert part in survivor_parts, (part, survivor_parts)

        for i in range(8, 11):
            await send(i)
            await asyncio.sleep(0.5)
        await _until_applied(conn, deployment, 11 * ROWS, timeout=90)

        # The cut instance rejoins the group and consumes again (whichever partition it gets back).
        deadline = time.monotonic() + 120
        k = 0
        while await _consumed(stack, "monitor-2", topics.PREDICTIONS) <= consumed_at_heal:
            assert time.monotonic() < deadline, "monitor-2 never consumed again after the heal"
            for key in (f"crejoin-{k}", f"crejoin-{k + 1}"):
                envelope, _, _ = batch(key, MODEL, 1, "stable", datetime.now(UTC), 5, seed=900 + k)
                await produce_events(bootstrap, topics.PREDICTIONS, [envelope], key=key.encode())
            k += 2
            await asyncio.sleep(0.5)
        rejoined_at = time.time()

        expected: Counter[datetime] = Counter()
        for at, rows in sent:
            expected[_window_of(at)] += rows
        query = (
            "SELECT window_start, revision, predictions FROM monitor.windows "
            "WHERE deployment = $1 AND kind = 'tumbling' AND version = 1"
        )
        deadline = time.monotonic() + 120
        while len(rows := await conn.fetch(query, deployment)) < len(expected):
            assert time.monotonic() < deadline, f"{len(rows)} of {len(expected)} windows closed"
            await asyncio.sleep(0.5)
        await asyncio.sleep(3.0)  # a second close of any of them would show up by now
        rows = await conn.fetch(query, deployment)
    finally:
        await conn.close()

    assert {r["window_start"]: r["predictions"] for r in rows} == dict(expected)
    assert len(rows) == len(expected)
    # One event per window revision: a window applied twice would be a second event (another id) for a revision.
    # The same event twice on the bus (one id, a relay's send repeated: at-least-once) is counted, not refused.
    records = [
        e
        for e in await topic_records(bootstrap, topics.MONITORING)
        if e.get("type") == "monitor.window"
        and e["data"]["deployment"] == deployment
        and e["data"]["window"]["kind"] == "tumbling"
    ]
    events = {str(e["id"]): e["data"] for e in records}
    per_window: dict[str, list[int]] = {}
    for d in events.values():
        per_window.setdefault(d["window"]["start"], []).append(int(d["revision"]))
    assert len(per_window) == len(expected), sorted(per_window)
    for start, revisions in per_window.items():
        assert sorted(revisions) == list(range(len(revisions))), (start, revisions)  # each revision once
    by_start = {r["window_start"]: r for r in rows}
    for d in events.values():
        row = by_start[datetime.fromisoformat(d["window"]["start"])]
        if int(d["revision"]) == row["revision"]:
            assert int(d["predictions"]) == row["predictions"]

    record(
        stack.paths.home,
        "monitor_owner_cut_from_broker",
        {
            "cut_instance": "monitor-2",
            "partition": part,
            "cut_to_survivor_applied_s": round(applied_at - cut_at, 3),
            "heal_to_cut_instance_consuming_s": round(rejoined_at - healed_at, 3),
            "windows": len(expected),
            "predictions": sum(expected.values()),
            "window_events_on_bus_twice": len(records) - len(events),
        },
    )


async def test_relay_leader_cut_from_the_broker_every_row_published_and_applied_once(
    stack: RunningStack, netns: Namespace
) -> None:
    data_dir = stack.paths.home / "data"
    data_dir.mkdir(exist_ok=True)
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    inner, outer = stack.services["registry-2"], stack.services["registry-1"]
    clients = {
        s.name: httpx.AsyncClient(base_url=s.url, timeout=30.0, trust_env=False, headers=headers)
        for s in (inner, outer)
    }
    conn = await asyncpg.connect(stack.database_url)
    announced: dict[str, float] = {}  # data.updated event id → wall time the registry answered

    async def announce(via: str, n: int) -> None:
        body = patient_risk.write_dataset(data_dir / f"c{n}.csv", rows=40, seed=n) | {
            "dataset": f"cut-{uuid.uuid4().hex[:8]}"
        }
        announced[await loop.announce(clients[via], stack.admin_token, body)] = time.time()

    async def pending() -> int:
        return int(await conn.fetchval("SELECT count(*) FROM registry.outbox WHERE published_at IS NULL"))

    figures: dict[str, Any] = {}
    try:
        for n in range(6):  # both relays publish while all is well
            await announce((inner.name, outer.name)[n % 2], n)
        deadline = time.monotonic() + 60
        while await pending():
            assert time.monotonic() < deadline, "rows left unpublished before the cut"
            await asyncio.sleep(0.2)

        netns.cut(netns.broker_ip)
        cut_at = time.monotonic()
        try:
            # Announce until the cut instance is seen holding the relay's lock with rows it cannot publish.
            n = 6
            held_since: float | None = None
            while held_since is None:
                assert n < 200, "the cut registry instance never took its relay's lock"
                await announce(outer.name, n)
                n += 1
                for _ in range(10):
                    if await relay_lock_holder_addr(conn, "registry") == netns.ns_ip:
                        held_since = time.monotonic()
                        break
                    await asyncio.sleep(0.02)
            # Rows keep coming through the instance outside; the holder keeps the lock until its request times out,
            # and may take it again later. Sampled every 0.5 s: who holds it, how much is pending.
            released: float | None = None
            samples: list[bool] = []  # the cut instance holds the lock
            while time.monotonic() - held_since < CUT_S:
                await announce(outer.name, n)
                n += 1
                samples.append(await relay_lock_holder_addr(conn, "registry") == netns.ns_ip)
                if released is None and not samples[-1]:
                    released = time.monotonic()
                await asyncio.sleep(0.5)
            rows_during_cut = len(announced) - 6
            pending_at_heal = await pending()
        finally:
            netns.heal(netns.broker_ip)
        healed_at = time.monotonic()
        for _ in range(6):  # and both again after the heal
            await announce((inner.name, outer.name)[n % 2], n)
            n += 1
        deadline = time.monotonic() + 90
        while await pending():
            assert time.monotonic() < deadline, "rows left unpublished after the heal"
            await asyncio.sleep(0.2)
        await asyncio.sleep(5.0)  # a send the cut relay had in flight, delivered late after the heal, shows by now
        rows = await conn.fetch("SELECT event_id, topic, publish_count FROM registry.outbox")
        figures = {
            "lock_taken_after_cut_s": round(held_since - cut_at, 3),
            "lock_first_seen_released_after_s": round(released - held_since, 3) if released is not None else None,
            "cut_instance_holding_lock_share": round(sum(samples) / len(samples), 2),
            "rows_announced_while_cut": rows_during_cut,
            "rows_pending_at_heal": pending_at_heal,
            "heal_to_all_published_s": round(time.monotonic() - healed_at - 5.0, 3),
        }
    finally:
        for c in clients.values():
            await c.aclose()
        await conn.close()

    outbox_ids = {r["event_id"] for r in rows}
    assert set(announced) <= outbox_ids
    on_bus: Counter[str] = Counter()
    copies: dict[str, list[tuple[str, int, int]]] = {}  # id → (topic, partition, offset) of each copy
    for topic in {r["topic"] for r in rows}:
        for i, partition, offset in await topic_positions(stack.bootstrap_servers, topic):
            if i in outbox_ids:
                on_bus[i] += 1
                copies.setdefault(i, []).append((topic, partition, offset))
    twice = sorted(i for i, k in on_bus.items() if k > 1)
    figures |= {
        "outbox_rows": len(outbox_ids),
        "rows_on_bus_twice": len(twice),
        # where the copies of a row seen twice sit: one partition or both, and how far apart
        "twice_by_partition": dict(Counter(f"{t}[{p}]" for i in twice for t, p, _ in copies[i][:1])),
        "twice_offset_gap_min_max": [min(gaps), max(gaps)] if (gaps := [_gap(copies[i]) for i in twice]) else [],
    }
    record(stack.paths.home, "relay_leader_cut_from_broker", figures)
    assert set(on_bus) == outbox_ids, f"{len(outbox_ids - set(on_bus))} rows never reached the bus"
    # Not asserted: each row once on the bus. The cut relay rolls a batch back at its first failed send while other
    # records of the batch are still queued in the producer, which delivers them after the heal; the next round
    # publishes them again (measured above: 4 runs of 11; traced in docs/faults.md). Asserted: the effect is once.

    async with httpx.AsyncClient(base_url=stack.url("auditor"), timeout=30.0, trust_env=False, headers=headers) as a:
        deadline = time.monotonic() + 120
        while True:  # the auditor consumes vigil.data: each announcement is one entry, never two
            audited = Counter(e["event_id"] for e in await audit_entries(a, type="data.updated"))
            if set(announced) <= set(audited) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
    assert set(announced) <= set(audited)
    assert [i for i, k in audited.items() if k > 1] == []
