"""An instance cut off and then back — a "zombie" — must not apply a window twice or publish an outbox row twice
(issue #24 item 2, the partition case).

The cut is SIGSTOP / SIGCONT: the instance stops answering the broker *and* Postgres at once, its consumer group
evicts it after the session timeout, a survivor takes its partitions, and then it wakes up still believing it
owns them, with whatever batch or relay transaction it had in flight. A broker-only partition (the instance still
reaching Postgres) was not reproduced here: this VM has no iptables/nft and the embedded broker advertises one
address, so one client cannot be cut from it alone.

- **Monitor**: the instance owning the canary's partition is paused mid-window while batches keep coming; the
  survivor applies them; the zombie is resumed and more batches follow. The window closes once, every prediction
  counted exactly once.
- **Outbox relay**: the registry instance holding its relay's lock is paused inside the relay's transaction (the
  broker frozen for a moment so the transaction waits for acks; the lock checked still held after the stop) while
  announcements go to the other instance. While it sleeps nobody
  publishes that outbox (the lock is held by a live connection: measured, not asserted); after it resumes every
  row reaches the bus exactly once — never two publishers for one row.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka.partitioner import murmur2
from fault.failover_support import (
    assigned_partitions,
    owner_of_connection,
    record,
    relay_lock_holder_port,
    replica_stack,
    topic_ids,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "monitor"))

from monitor_support import batch, reference, registered, window_with_room

from support.kafka import produce_events
from vigil.demo import loop
from vigil.events import topics
from vigil.monitor.state import WindowState
from vigil.stack.supervisor import RunningStack, ServiceProcess
from vigil.trainer.examples import patient_risk

pytestmark = [pytest.mark.fault]

DEPLOYMENT = "canary-zombie"
MODEL = "m-zombie"
WINDOW_S = 60.0
PAUSE_S = 20.0  # > 3 session timeouts: the group surely evicts the paused member
ROWS = 200


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("failover-paused")
    env = {"VIGIL_WINDOW_S": str(WINDOW_S), "VIGIL_WINDOW_GRACE_S": "2"}
    with replica_stack(home, {"registry": 2, "monitor": 2}, env) as running:
        yield running


def _pause(svc: ServiceProcess) -> None:
    assert svc.pid is not None
    os.kill(svc.pid, signal.SIGSTOP)


def _resume(svc: ServiceProcess) -> None:
    assert svc.pid is not None
    os.kill(svc.pid, signal.SIGCONT)


async def _predictions(conn: asyncpg.Connection) -> int:
    rows = await conn.fetch("SELECT state FROM monitor.window_state WHERE deployment = $1", DEPLOYMENT)
    return sum(WindowState.from_bytes(bytes(r["state"]), None).predictions for r in rows)


async def _until(conn: asyncpg.Connection, want: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (n := await _predictions(conn)) < want:
        assert time.monotonic() < deadline, f"only {n} of {want} predictions applied"
        await asyncio.sleep(0.1)


async def test_paused_monitor_owner_resumed_does_not_count_a_window_twice(stack: RunningStack) -> None:
    bootstrap = stack.bootstrap_servers
    part = (murmur2(DEPLOYMENT.encode()) & 0x7FFFFFFF) % 2
    await produce_events(bootstrap, topics.MODELS, [registered(MODEL, 1, reference())], key=MODEL.encode())
    warm_at = window_with_room(WINDOW_S, 0.0)
    for i in range(60):  # until monitor-2 (the later member) consumes a partition: the group has settled
        envelope, _, _ = batch(f"zwarm-{i}", MODEL, 1, "stable", warm_at, 5, seed=500 + i)
        await produce_events(bootstrap, topics.PREDICTIONS, [envelope], key=f"zwarm-{i}".encode())
        await asyncio.sleep(0.25)
        if await assigned_partitions(stack, "monitor-2", topics.PREDICTIONS):
            break
    second = await assigned_partitions(stack, "monitor-2", topics.PREDICTIONS)
    assert second, "monitor-2 never got a partition"
    victim_key, survivor_key = ("monitor-2", "monitor-1") if part in second else ("monitor-1", "monitor-2")
    victim = stack.services[victim_key]

    at = window_with_room(WINDOW_S, 50.0)
    conn = await asyncpg.connect(stack.database_url)
    total = 0
    try:

        async def send(seed: int) -> None:
            nonlocal total
            envelope, _, _ = batch(DEPLOYMENT, MODEL, 1, "stable", at, ROWS, seed=seed)
            await produce_events(bootstrap, topics.PREDICTIONS, [envelope], key=DEPLOYMENT.encode())
            total += ROWS

        for i in range(3):
            await send(i)
        await _until(conn, total, timeout=60)
        await send(3)  # the victim is likely mid-batch with this one when it stops
        _pause(victim)
        paused_at = time.monotonic()
        taken_over_s: float | None = None
        try:
            for i in range(4, 8):
                await send(i)
            # The survivor takes the partition over after the session timeout — unless the sleeper holds a lock
            # its transaction took (a window row): then the survivor waits for it. Measured, not asserted.
            while time.monotonic() - paused_at < PAUSE_S:
                if taken_over_s is None and await _predictions(conn) >= total:
                    taken_over_s = time.monotonic() - paused_at
                await asyncio.sleep(0.1)
            survivor_parts = await assigned_partitions(stack, survivor_key, topics.PREDICTIONS)
        finally:
            _resume(victim)
        assert part in survivor_parts  # the group moved the partition while the victim slept
        for i in range(8, 11):
            await send(i)
        await _until(conn, total, timeout=120)

        deadline = time.monotonic() + 150
        query = (
            "SELECT revision, predictions FROM monitor.windows WHERE deployment = $1 AND kind = 'tumbling' "
            "AND version = 1"
        )
        while not (rows := await conn.fetch(query, DEPLOYMENT)):
            assert time.monotonic() < deadline, "the window never closed"
            await asyncio.sleep(0.5)
        await asyncio.sleep(5.0)  # a second close by the zombie would show up by now
        rows = await conn.fetch(query, DEPLOYMENT)
    finally:
        await conn.close()
    assert [r["predictions"] for r in rows] == [total]
    assert rows[0]["revision"] == 0
    record(
        stack.paths.home,
        "monitor_owner_paused",
        {
            "victim": victim_key,
            "pause_s": PAUSE_S,
            "pause_to_survivor_applied_s": round(taken_over_s, 3) if taken_over_s is not None else None,
        },
    )


async def test_paused_relay_lock_holder_resumed_publishes_no_row_twice(stack: RunningStack) -> None:
    data_dir = stack.paths.home / "data"
    data_dir.mkdir(exist_ok=True)
    conn = await asyncpg.connect(stack.database_url)
    announced = 0

    async def announce(name: str, n: int) -> None:
        nonlocal announced
        body = patient_risk.write_dataset(data_dir / f"z{n}.csv", rows=40, seed=n) | {
            "dataset": f"zombie-{uuid.uuid4().hex[:8]}"
        }
        await loop.announce(clients[name], stack.admin_token, body)
        announced += 1

    async def pending() -> int:
        return int(await conn.fetchval("SELECT count(*) FROM registry.outbox WHERE published_at IS NULL"))

    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    clients = {
        s.name: httpx.AsyncClient(base_url=s.url, timeout=30.0, trust_env=False, headers=headers)
        for s in stack.instances("registry")
    }
    names = list(clients)
    broker_pid = stack.broker.pid
    assert broker_pid is not None
    asleep: ServiceProcess | None = None
    try:
        n = 0
        for _ in range(3):
            for name in names:
                await announce(name, n)
                n += 1
        # The broker frozen for a moment: the next relay transaction holds its lock while it waits for the acks, so
        # the holder is found and stopped inside that transaction — not a race against a few milliseconds.
        os.kill(broker_pid, signal.SIGSTOP)
        try:
            await announce(names[n % 2], n)  # the API commits to Postgres only; the relay is what waits
            n += 1
            deadline = time.monotonic() + 30
            holder: ServiceProcess | None = None
            while holder is None:
                assert time.monotonic() < deadline, "no registry instance was seen holding the relay lock"
                port = await relay_lock_holder_port(conn, "registry")
                holder = owner_of_connection(stack, port) if port else None
                await asyncio.sleep(0.02)
            _pause(holder)
            asleep = holder
            paused_at = time.monotonic()
            assert await relay_lock_holder_port(conn, "registry") == port  # asleep inside the transaction
        finally:
            os.kill(broker_pid, signal.SIGCONT)
        (other,) = [name for name in clients if name != holder.name]
        try:
            for _ in range(20):  # through the instance that still runs (the front would also hand the sleeper turns)
                await announce(other, n)
                n += 1
            await asyncio.sleep(max(0.0, PAUSE_S - (time.monotonic() - paused_at)))
            pending_while_paused = await pending()
        finally:
            _resume(holder)
            asleep = None
        resumed_at = time.monotonic()
        deadline = resumed_at + 90
        while await pending():
            assert time.monotonic() < deadline, "rows left unpublished after the resume"
            await asyncio.sleep(0.2)
        drained_s = time.monotonic() - resumed_at
        rows = await conn.fetch("SELECT event_id, topic FROM registry.outbox")
    finally:
        if asleep is not None:  # a failed check above must not leave a stopped process behind
            _resume(asleep)
        for c in clients.values():
            await c.aclose()
        await conn.close()

    outbox_ids = {r["event_id"] for r in rows}
    on_bus: Counter[str] = Counter()
    for topic in {r["topic"] for r in rows}:
        on_bus.update(i for i in await topic_ids(stack.bootstrap_servers, topic) if i in outbox_ids)
    assert set(on_bus) == outbox_ids, f"{len(outbox_ids - set(on_bus))} rows never reached the bus"
    assert [i for i, k in on_bus.items() if k > 1] == [], "an outbox row was published twice"
    record(
        stack.paths.home,
        "relay_lock_holder_paused",
        {
            "paused": holder.name,
            "pause_s": PAUSE_S,
            "rows_pending_at_end_of_pause": pending_while_paused,
            "resume_to_all_published_s": round(drained_s, 3),
            "outbox_rows": len(outbox_ids),
        },
    )
