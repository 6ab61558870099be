"""Scale-out benchmark (issue #24 item 3): monitor predictions/s and auditor events/s with 1 and 2 instances.

Run: ``make bench-scale`` (``.venv/bin/python tests/bench/bench_scale.py``; ``--quick`` for a short run). For each
instance count it starts an embedded stack of its own (broker, Postgres, ``monitor`` × N and ``auditor`` × N as
``python -m`` processes, as ``vigil up --replicas monitor=N,auditor=N`` does) and, ``--reps`` times each:

- **monitor**: ``--batches`` signed ``prediction.logged`` batches of ``--rows`` rows over 8 deployments (both
  partitions of ``vigil.predictions``), produced as fast as the client can; the figure is rows / (first send →
  the instances' ``vigil_monitor_rows_total{stream="predictions"}`` sum reaching the total), i.e. end to end with
  the producer on the same machine.
- **auditor**: ``--events`` signed control-plane events (``monitor.window``, ~0.6 KB) over 8 keys; the figure is
  events / (first send → that many more rows in ``auditor.audit_log``).

Writes ``docs/benchmarks/scale.json`` (medians per count, the ratio 2/1, each sample, machine and load averages)
and ``scale.md``. What to expect on a 2-core machine shared with other work: little or nothing from a second
instance — both instances, the broker, Postgres and the load generator share the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "integration" / "monitor"))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402
from bench_host import machine_line  # noqa: E402
from monitor_support import batch, reference, registered  # noqa: E402

from support import signing  # noqa: E402
from vigil.events import make_event, topics  # noqa: E402
from vigil.events.catalog.common import Window  # noqa: E402
from vigil.events.catalog.monitoring import MonitorWindow  # noqa: E402
from vigil.stack.supervisor import RunningStack, default_launches, running_stack  # noqa: E402

OUT = REPO / "docs" / "benchmarks"
DEPLOYMENTS = [f"scale-{i}" for i in range(8)]
MODEL = "scale-m"
ENV = {
    "VIGIL_ENVIRONMENT": "test",
    "VIGIL_KAFKA_TOPIC_PARTITIONS": "2",
    "VIGIL_KAFKA_SESSION_TIMEOUT_MS": "6000",
    "VIGIL_OUTBOX_POLL_INTERVAL_MS": "50",
    "VIGIL_WINDOW_S": "3600",  # one open window for the whole run: every row is applied, none late
    "VIGIL_WINDOW_GRACE_S": "5",
    "VIGIL_POLICY_CACHE_S": "0",
}


async def _producer(bootstrap: str) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024, linger_ms=5)
    await producer.start()
    return producer


async def _monitor_rows(stack: RunningStack, client: httpx.AsyncClient) -> float:
    total = 0.0
    want = 'vigil_monitor_rows_total{outcome="applied",stream="predictions"} '
    for svc in stack.instances("monitor"):
        for line in (await client.get(f"{svc.url}/metrics")).text.splitlines():
            if line.startswith(want):
                total += float(line[len(want) :])
    return total


async def monitor_sample(stack: RunningStack, batches: int, rows: int, seed: int) -> dict[str, float]:
    at = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    values = []
    for i in range(batches):
        envelope, _, _ = batch(DEPLOYMENTS[i % len(DEPLOYMENTS)], MODEL, 1, "stable", at, rows, seed=seed + i)
        values.append(envelope.canonical_bytes())
    headers = signing.signing_key("service:deployer").sign_values(values)  # as the gateway signs them
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        before = await _monitor_rows(stack, client)
        producer = await _producer(stack.bootstrap_servers)
        try:
            started = time.monotonic()
            futures = [
                await producer.send(
                    topics.PREDICTIONS, v, key=DEPLOYMENTS[i % len(DEPLOYMENTS)].encode(), headers=headers[i]
                )
                for i, v in enumerate(values)
            ]
            await asyncio.gather(*futures)
            produced = time.monotonic() - started
        finally:
            await producer.stop()
        goal = before + batches * rows
        while await _monitor_rows(stack, client) < goal:
            if time.monotonic() - started > 600:
                raise RuntimeError("the monitors did not apply every row within 10 minutes")
            await asyncio.sleep(0.1)
        took = time.monotonic() - started
    return {"rows": batches * rows, "seconds": round(took, 3), "produce_s": round(produced, 3),
            "per_s": round(batches * rows / took)}  # fmt: skip


async def auditor_sample(stack: RunningStack, events: int, offset: int) -> dict[str, float]:
    values = []
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(events):
        start = base + timedelta(minutes=offset + i)
        envelope = make_event(
            MonitorWindow(deployment=DEPLOYMENTS[i % len(DEPLOYMENTS)], model=MODEL, version=1, variant="stable",
                          window=Window(start=start, end=start + timedelta(minutes=1)), predictions=i, labels=0),
            source="bench://scale", actor="system:bench",
        )  # fmt: skip
        values.append(envelope.canonical_bytes())
    headers = signing.signing_key("service:monitor").sign_values(values)
    conn = await asyncpg.connect(stack.database_url)
    try:
        before = await conn.fetchval("SELECT count(*) FROM auditor.audit_log")
        producer = await _producer(stack.bootstrap_servers)
        try:
            started = time.monotonic()
            futures = [
                await producer.send(
                    topics.MONITORING, v, key=DEPLOYMENTS[i % len(DEPLOYMENTS)].encode(), headers=headers[i]
                )
                for i, v in enumerate(values)
            ]
            await asyncio.gather(*futures)
            produced = time.monotonic() - started
        finally:
            await producer.stop()
        while await conn.fetchval("SELECT count(*) FROM auditor.audit_log") < before + events:
            if time.monotonic() - started > 600:
                raise RuntimeError("the auditors did not record every event within 10 minutes")
            await asyncio.sleep(0.1)
        took = time.monotonic() - started
    finally:
        await conn.close()
    return {"events": events, "seconds": round(took, 3), "produce_s": round(produced, 3),
            "per_s": round(events / took)}  # fmt: skip


async def _settled(stack: RunningStack) -> None:
    """Warm-up: a small load through both services until every instance has consumed something (the groups have
    settled on all members and numba's kernels are compiled)."""
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        for attempt in range(30):
            await monitor_sample(stack, 16, 200, seed=10_000 + attempt * 100)
            await auditor_sample(stack, 40, offset=1_000_000 + attempt * 100)
            busy = 0
            for svc in stack.services.values():
                text = (await client.get(f"{svc.url}/metrics")).text
                busy += any(line.startswith("vigil_consumer_lag{") for line in text.splitlines())
            if busy == len(stack.services):
                return
            await asyncio.sleep(1.0)
    raise RuntimeError("not every instance got a partition")


async def measure(instances: int, args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"vigil-bench-scale-{instances}-"))
    counts = {"monitor": instances, "auditor": instances}
    with running_stack(
        home,
        services=default_launches(list(counts), free_ports=True, replicas=counts),
        broker_port=0,
        postgres_port=0,
        postgres_durable=False,
        database_url=None,
        ready_timeout=300.0,
        extra_env=ENV,
    ) as stack:
        producer = await _producer(stack.bootstrap_servers)
        try:
            raw = registered(MODEL, 1, reference()).canonical_bytes()
            await producer.send_and_wait(topics.MODELS, raw, key=MODEL.encode(), headers=signing.signed_headers(raw))
        finally:
            await producer.stop()
        await _settled(stack)
        monitor = []
        auditor = []
        for rep in range(args.reps):
            load = os.getloadavg()[0]
            monitor.append(await monitor_sample(stack, args.batches, args.rows, seed=rep * 1000) | {"load": load})
            auditor.append(await auditor_sample(stack, args.events, offset=rep * 100_000) | {"load": load})
            print(f"{instances} instance(s), rep {rep + 1}: monitor {monitor[-1]}, auditor {auditor[-1]}", flush=True)
    return {
        "instances": instances,
        "monitor_predictions_per_s_median": statistics.median(s["per_s"] for s in monitor),
        "auditor_events_per_s_median": statistics.median(s["per_s"] for s in auditor),
        "monitor_samples": monitor,
        "auditor_samples": auditor,
    }


def write(results: dict[int, dict[str, Any]], info: dict[str, Any]) -> None:
    one, two = results[1], results[2]
    m_ratio = round(two["monitor_predictions_per_s_median"] / one["monitor_predictions_per_s_median"], 2)
    a_ratio = round(two["auditor_events_per_s_median"] / one["auditor_events_per_s_median"], 2)
    data = {
        "monitor_predictions_per_s_1": one["monitor_predictions_per_s_median"],
        "monitor_predictions_per_s_2": two["monitor_predictions_per_s_median"],
        "monitor_ratio_2_over_1": m_ratio,
        "auditor_events_per_s_1": one["auditor_events_per_s_median"],
        "auditor_events_per_s_2": two["auditor_events_per_s_median"],
        "auditor_ratio_2_over_1": a_ratio,
        "machine": info,
        "detail": {str(k): v for k, v in results.items()},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "scale.json").write_text(json.dumps(data, indent=2) + "\n")
    md = [
        "# Scale-out: one instance against two",
        "",
        f"Run {info['date']} by `make bench-scale` (tests/bench/bench_scale.py) on {info['machine']}; load average "
        f"{info['load_start']:.2f} at start, {info['load_end']:.2f} at the end — the machine was shared with other "
        "work during the run, so the figures move with it.",
        "",
        "Each figure is the median of the repetitions: end to end, from the first record sent by a producer on the "
        "same machine to the last one applied (monitor: rows in `vigil_monitor_rows_total` summed over instances; "
        "auditor: rows in `audit_log`). Both instances, the broker, Postgres and the producer share the same cores.",
        "",
        "| | 1 instance | 2 instances | 2 / 1 |",
        "|---|---|---|---|",
        f"| monitor predictions/s ({info['batches']} batches × {info['rows']} rows) | "
        f"{one['monitor_predictions_per_s_median']:,} | {two['monitor_predictions_per_s_median']:,} | {m_ratio} |",
        f"| auditor events/s ({info['events']} events) | {one['auditor_events_per_s_median']:,} | "
        f"{two['auditor_events_per_s_median']:,} | {a_ratio} |",
        "",
        "Samples (per/s, seconds, load average at the start of the sample):",
        "",
    ]
    for n, r in results.items():
        for kind in ("monitor", "auditor"):
            samples = ", ".join(f"{s['per_s']:,}/s in {s['seconds']} s (load {s['load']:.1f})"
                                for s in r[f"{kind}_samples"])  # fmt: skip
            md.append(f"- {kind}, {n} instance(s): {samples}")
    md.append("")
    (OUT / "scale.md").write_text("\n".join(md))
    print(json.dumps({k: v for k, v in data.items() if k != "detail"}, indent=2))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--events", type=int, default=8000)
    parser.add_argument("--quick", action="store_true", help="1 rep, 40 batches, 600 events")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.batches, args.events = 1, 40, 600
    signing.install()  # event keys for the stack's services (VIGIL_EVENT_KEYS_DIR), as the tests' conftest does
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("VIGIL_DATABASE_URL", None)
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_line(),
        "load_start": os.getloadavg()[0],
        "batches": args.batches,
        "rows": args.rows,
        "events": args.events,
        "reps": args.reps,
    }
    results = {n: await measure(n, args) for n in (1, 2)}
    info["load_end"] = os.getloadavg()[0]
    write(results, info)


if __name__ == "__main__":
    asyncio.run(main())
