"""Two monitor instances in one consumer group; the one owning the canary's partition is killed with SIGKILL while
its window is open (issue #24 item 2).

Prediction batches of the canary stream in, half before the kill and half after; ground truth follows for every
row. The partition moves to the survivor, which catches up from the last committed offset: the window closes
once, with every prediction and label counted exactly once (a batch the victim applied but never committed the
offset of is delivered again and skipped by the inbox), and one ``monitor.window`` event per revision says so.
The pause — a batch's send → its rows in the Postgres window state — is measured and written to
``failover.json``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2
from fault.failover_support import assigned_partitions, pause_figures, record, replica_stack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "monitor"))

from monitor_support import batch, labels, reference, registered, window_with_room

from support.kafka import produce_events
from vigil.events import topics
from vigil.monitor.state import WindowState
from vigil.stack.supervisor import RunningStack

pytestmark = [pytest.mark.fault]

DEPLOYMENT = "canary-fo"
MODEL = "m-fo"
WINDOW_S = 45.0
PARTITIONS = 2
BATCHES = 6  # before the kill, and as many after it
ROWS = 300


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("failover-monitor")
    # A window long enough to stay open through a kill and a consumer-group rebalance (session timeout 6 s).
    env = {"VIGIL_WINDOW_S": str(WINDOW_S), "VIGIL_WINDOW_GRACE_S": "2", "VIGIL_KAFKA_TOPIC_PARTITIONS": "2"}
    with replica_stack(home, {"monitor": 2}, env) as running:
        yield running


def _partition(key: str) -> int:
    """The partition the producer's default partitioner puts ``key`` in."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


async def _window_predictions(conn: asyncpg.Connection) -> int:
    rows = await conn.fetch("SELECT state FROM monitor.window_state WHERE deployment = $1", DEPLOYMENT)
    return sum(WindowState.from_bytes(bytes(r["state"]), None).predictions for r in rows)


async def _until_applied(conn: asyncpg.Connection, rows: int, *, timeout: float) -> float:
    """Wall time at which the window state first held ``rows`` predictions."""
    deadline = time.monotonic() + timeout
    while (n := await _window_predictions(conn)) < rows:
        assert time.monotonic() < deadline, f"only {n} of {rows} predictions applied"
        await asyncio.sleep(0.05)
    return time.time()


async def _monitoring_events(bootstrap: str, *, idle_s: float = 3.0) -> list[dict[str, object]]:
    consumer = AIOKafkaConsumer(
        topics.MONITORING, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    out: list[dict[str, object]] = []
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                out.extend(json.loads(r.value) for r in records)
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return out


async def test_monitor_owning_the_canary_partition_killed_mid_window(stack: RunningStack) -> None:
    bootstrap = stack.bootstrap_servers
    part = _partition(DEPLOYMENT)
    await produce_events(bootstrap, topics.MODELS, [registered(MODEL, 1, reference())], key=MODEL.encode())
    conn = await asyncpg.connect(stack.database_url)
    try:
        # Warm-up on other deployments until monitor-2 (the later member) consumes a predictions partition: the
        # group has then settled on two members, one partition each.
        warm_at = window_with_room(WINDOW_S, 0.0)
        for i in range(60):
            envelope, _, _ = batch(f"warm-{i}", MODEL, 1, "stable", warm_at, 5, seed=100 + i)
            await produce_events(bootstrap, topics.PREDICTIONS, [envelope], key=f"warm-{i}".encode())
            await asyncio.sleep(0.25)
            if await assigned_partitions(stack, "monitor-2", topics.PREDICTIONS):
                break
        second = await assigned_partitions(stack, "monitor-2", topics.PREDICTIONS)
        assert second, "monitor-2 never got a partition"
        victim, survivor = ("monitor-2", "monitor-1") if part in second else ("monitor-1", "monitor-2")

        at = window_with_room(WINDOW_S, 35.0)
        sent: list[tuple[float, int]] = []  # (send time, rows in the window state once this batch is applied)
        truths = []
        total = 0
        killed_at = 0.0
        applied_at: dict[int, float] = {}
        for i in range(2 * BATCHES):
            if i == BATCHES:
                code = await asyncio.to_thread(stack.kill_service, victim)
                assert code == -9
                killed_at = time.time()
            envelope, ids, (truth, _) = batch(DEPLOYMENT, MODEL, 1, "stable", at, ROWS, seed=i)
            truths.append((ids, truth))
            await produce_events(bootstrap, topics.PREDICTIONS, [envelope], key=DEPLOYMENT.encode())
            total += ROWS
            sent.append((time.time(), total))
            applied_at[i] = await _until_applied(conn, total, timeout=90)
        for ids, truth in truths:
            await produce_events(bootstrap, topics.LABELS, labels(DEPLOYMENT, ids, truth), key=DEPLOYMENT.encode())

        assert part in await assigned_partitions(stack, survivor, topics.PREDICTIONS)

        deadline = time.monotonic() + 120
        while not (
            rows := await conn.fetch(
                "SELECT revision, predictions, labels FROM monitor.windows WHERE deployment = $1 AND kind = 'tumbling'",
                DEPLOYMENT,
            )
        ):
            assert time.monotonic() < deadline, "the window never closed"
            await asyncio.sleep(0.5)
        await asyncio.sleep(WINDOW_S / 4)  # time for a wrong second close or a revision to show up
        rows = await conn.fetch(
            "SELECT revision, predictions, labels FROM monitor.windows WHERE deployment = $1 AND kind = 'tumbling'",
            DEPLOYMENT,
        )
    finally:
        await conn.close()

    # Labels may close the window as revision 0 or arrive as a revision; either way it is one window, counted once.
    assert len(rows) == 1, [dict(r) for r in rows]
    assert rows[0]["predictions"] == total
    assert rows[0]["labels"] == total
    events = [e for e in await _monitoring_events(bootstrap) if e["type"] == "monitor.window"]
    ours = [
        e["data"]  # type: ignore[index]
        for e in events
        if e["data"]["deployment"] == DEPLOYMENT and e["data"]["window"]["kind"] == "tumbling"  # type: ignore[index]
    ]
    revisions = sorted(d["revision"] for d in ours)  # type: ignore[index]
    assert revisions == list(range(len(revisions))), revisions  # one event per revision, none repeated
    assert ours and max(ours, key=lambda d: d["revision"])["predictions"] == total  # type: ignore[index]

    lat = [applied_at[i] - sent[i][0] for i in range(2 * BATCHES)]
    record(
        stack.paths.home,
        "monitor_canary_owner_kill",
        pause_figures(lat[:BATCHES], lat[BATCHES:])
        | {
            "victim": victim,
            "partition": part,
            "first_batch_after_kill_applied_s": round(applied_at[BATCHES] - killed_at, 3),
            "predictions": total,
            "window_revisions": len(revisions),
        },
    )
