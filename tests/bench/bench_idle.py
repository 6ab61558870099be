"""What an idle platform costs, and what the embedded broker's fetch wait buys.

Run: ``make bench-idle`` (``.venv/bin/python tests/bench/bench_idle.py``; ``--quick`` for a short run). Three parts:

- **Idle stack.** The embedded stack as ``vigil up`` starts it (broker, Postgres, the six services as processes),
  with no traffic: CPU seconds per process over ``--window`` seconds after ``--settle`` seconds, from
  ``/proc/<pid>/stat``. Twice per configuration, interleaved: the defaults, and the deployer's fetch wait raised
  from its 50 ms to the other services' 500 ms (``VIGIL_KAFKA_FETCH_MAX_WAIT_MS=500``).
- **Broker-epoch check.** CPU per check of ``BrokerEpochWatch`` (this process's and the broker's), each followed by
  the metadata refresh its reader makes once per interval, against the way it worked until f8f5ecb, a new consumer
  per check, measured in the same run on the same broker.
- **Delivery latency against ``fetch_max_wait_ms``.** A consumer waits in a fetch; a record is produced at a
  random moment; the figure is from the send to ``getmany`` returning it, per fetch wait. Tansu 0.6.0 looks for
  new records at halving intervals of the wait (``tansu-storage/src/service/fetch.rs``: it sleeps half the time
  left, then looks again), so a record can wait up to half the fetch wait; Apache Kafka, by its documentation,
  answers as soon as a record is there.

Writes ``docs/benchmarks/idle.json`` and ``idle.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

import psutil  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from bench_host import machine_line  # noqa: E402

from vigil.bus.epoch import BrokerEpochWatch  # noqa: E402
from vigil.bus.producer import BusProducer  # noqa: E402
from vigil.bus.topics import EPOCH_TOPIC, TopicNamer, ensure_topics  # noqa: E402
from vigil.stack.broker import EmbeddedBroker  # noqa: E402
from vigil.stack.supervisor import default_launches, running_stack  # noqa: E402

OUT = REPO / "docs" / "benchmarks"
CONFIGS = {"defaults": {}, "deployer fetch wait 500 ms": {"VIGIL_KAFKA_FETCH_MAX_WAIT_MS": "500"}}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (0 once it is gone)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


def role(process: psutil.Process) -> str:
    try:
        cmd = " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return "gone"
    if "tansu" in cmd:
        return "broker"
    if cmd.startswith("postgres"):
        return "postgres"
    for part in cmd.split():
        if part.startswith("vigil.") and part.count(".") == 1:
            return part.removeprefix("vigil.")
    return "other"


def idle_stack(extra_env: dict[str, str], settle_s: float, window_s: float) -> dict[str, float]:
    """CPU seconds per minute, per role, of an idle embedded stack."""
    with (
        tempfile.TemporaryDirectory() as home,
        running_stack(
            Path(home),
            services=default_launches(free_ports=True),
            broker_port=0,
            postgres_port=0,
            postgres_durable=False,
            extra_env=extra_env,
        ),
    ):
        time.sleep(settle_s)
        processes = psutil.Process().children(recursive=True)
        pids = [p.pid for p in processes]
        roles = {p.pid: role(p) for p in processes}
        before = {pid: cpu_s(pid) for pid in pids}
        time.sleep(window_s)
        after = {pid: cpu_s(pid) for pid in pids}
    per_role: dict[str, float] = defaultdict(float)
    for pid in pids:
        per_role[roles[pid]] += (after[pid] - before[pid]) * 60 / window_s
    per_role.pop("gone", None)
    if not per_role.get("other"):
        per_role.pop("other", None)
    per_role["total"] = sum(per_role.values())
    return {k: round(v, 2) for k, v in sorted(per_role.items())}


async def epoch_checks(bootstrap: str, broker_pid: int, checks: int) -> dict[str, dict[str, float]]:
    """Milliseconds of CPU per broker-epoch check: this process, the broker, and wall time."""
    namer = TopicNamer("bench.")
    tp = TopicPartition(namer.physical(EPOCH_TOPIC), 0)
    await ensure_topics(bootstrap, [tp.topic], partitions=1, replication_factor=1)
    producer = BusProducer(bootstrap, service="bench", namer=namer, signer=None)
    await producer.start()

    async def nothing() -> None:
        return None

    watch = BrokerEpochWatch(bootstrap, producer, nothing, service="bench")
    await watch._plant()

    async def kept() -> None:  # the watch as it is, with the metadata refresh it makes once per interval
        assert await watch._sentinel_present() is True
        assert watch._reader is not None
        assert await watch._reader._client.force_metadata_update()

    async def fresh() -> None:  # a new consumer per check, as until f8f5ecb
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=5_000)
        await consumer.start()
        try:
            assert consumer.partitions_for_topic(tp.topic)
            assert (await consumer.end_offsets([tp]))[tp] > watch._offset
            consumer.assign([tp])
            consumer.seek(tp, watch._offset)
            assert (await consumer.getmany(tp, timeout_ms=2_000, max_records=1)).get(tp)
        finally:
            await consumer.stop()

    samples: dict[str, list[tuple[float, float, float]]] = {"kept reader": [], "new consumer per check": []}
    ways: dict[str, Callable[[], Awaitable[None]]] = {"kept reader": kept, "new consumer per check": fresh}
    try:
        for _ in range(3):  # interleaved rounds
            for name, check in ways.items():
                client, broker, wall = time.process_time(), cpu_s(broker_pid), time.perf_counter()
                for _ in range(checks):
                    await check()
                samples[name].append(
                    (
                        (time.process_time() - client) * 1000 / checks,
                        (cpu_s(broker_pid) - broker) * 1000 / checks,
                        (time.perf_counter() - wall) * 1000 / checks,
                    )
                )
    finally:
        await watch.stop()
        await producer.stop()
    return {
        name: {
            "client_cpu_ms": round(statistics.median(s[0] for s in rows), 3),
            "broker_cpu_ms": round(statistics.median(s[1] for s in rows), 3),
            "wall_ms": round(statistics.median(s[2] for s in rows), 3),
        }
        for name, rows in samples.items()
    }


async def delivery_latency(bootstrap: str, wait_ms: int, records: int) -> dict[str, float]:
    """Send → ``getmany`` for records produced at random moments, while the consumer waits in a fetch."""
    topic = f"bench.latency.{wait_ms}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, fetch_max_wait_ms=wait_ms, auto_offset_reset="earliest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    latencies = []
    try:
        await asyncio.sleep(1)
        for _ in range(records):
            await asyncio.sleep(random.uniform(0.2, 1.3))  # lands anywhere in the consumer's waiting fetch
            start = time.perf_counter()
            await producer.send_and_wait(topic, b"x")
            assert await consumer.getmany(timeout_ms=10_000), "the record did not arrive"
            latencies.append((time.perf_counter() - start) * 1000)
    finally:
        await consumer.stop()
        await producer.stop()
    return {
        "median_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(statistics.quantiles(latencies, n=20, method="inclusive")[18], 1),
        "max_ms": round(max(latencies), 1),
        "records": records,
    }


def flat(results: dict[str, Any]) -> dict[str, float]:
    """The headline figures as flat keys (docs/benchmarks/README.md's table shows these): medians over the runs."""
    stacks = results["idle_stack_cpu_s_per_min"]
    epoch = results["epoch_check"]
    figures = {
        "idle_stack_cpu_s_per_min": statistics.median(run["total"] for run in stacks["defaults"]),
        "idle_broker_cpu_s_per_min": statistics.median(run["broker"] for run in stacks["defaults"]),
        "idle_deployer_cpu_s_per_min": statistics.median(run["deployer"] for run in stacks["defaults"]),
        "idle_stack_cpu_s_per_min_deployer_fetch_wait_500": statistics.median(
            run["total"] for run in stacks["deployer fetch wait 500 ms"]
        ),
        "epoch_check_cpu_ms": epoch["kept reader"]["client_cpu_ms"] + epoch["kept reader"]["broker_cpu_ms"],
        "epoch_check_cpu_ms_new_consumer_per_check": epoch["new consumer per check"]["client_cpu_ms"]
        + epoch["new consumer per check"]["broker_cpu_ms"],
    }
    for wait, row in results["delivery_latency"].items():
        figures[f"delivery_latency_ms_median_fetch_wait_{wait}"] = row["median_ms"]
        figures[f"delivery_latency_ms_max_fetch_wait_{wait}"] = row["max_ms"]
    return {k: round(v, 3) for k, v in figures.items()}


def write(results: dict[str, Any], info: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    figures = flat(results)
    data = {**figures, "detail": results, "machine": info}
    (OUT / "idle.json").write_text(json.dumps(data, indent=2) + "\n")
    stacks = results["idle_stack_cpu_s_per_min"]
    roles = sorted({r for runs in stacks.values() for run in runs for r in run if r != "total"})
    names = list(stacks)
    md = [
        "# An idle platform, and the embedded broker's fetch wait",
        "",
        f"Run {info['date']} by `make bench-idle` (tests/bench/bench_idle.py) on {info['machine']}; load average "
        f"{info['load_avg_1m_at_start']:.2f} at the start, {info['load_avg_1m_at_end']:.2f} at the end. No traffic: "
        "what the stack costs while it waits.",
        "",
        f"## Idle embedded stack: CPU seconds per minute ({info['window_s']:.0f} s windows, "
        f"{info['settle_s']:.0f} s after start; each run's figure, runs interleaved)",
        "",
        "| process | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for r in [*roles, "total"]:
        cells = [" / ".join(f"{run.get(r, 0.0):.2f}" for run in stacks[name]) for name in names]
        md.append(f"| {r} | " + " | ".join(cells) + " |")
    md += [
        "",
        "The deployer's consumer waits at most 50 ms per fetch (docs/deployer.md: a `rollback.requested` is read "
        "within tens of milliseconds); the other services' wait 500 ms. On the embedded broker every waiting fetch "
        "costs a few sweeps of the consumer's partitions, so the shorter wait is paid for while nothing happens.",
        "",
        f"## One broker-epoch check (milliseconds, median of 3 interleaved rounds of {info['checks']} checks; the "
        "kept reader's include the metadata refresh it makes once per check interval)",
        "",
        "| | this process's CPU | the broker's CPU | wall |",
        "|---|---|---|---|",
    ]
    for name, row in results["epoch_check"].items():
        md.append(f"| {name} | {row['client_cpu_ms']:.2f} | {row['broker_cpu_ms']:.2f} | {row['wall_ms']:.2f} |")
    md += [
        "",
        "Each service checks once a second (`broker_epoch_check_interval_ms`; the tests: every 500 ms). A new "
        "consumer per check also meant two new connections, and on a secured bus their TLS and SCRAM handshakes, "
        "every second per service.",
        "",
        f"## Delivery latency through the embedded broker ({info['records']} records per row, sent at random "
        "moments while the consumer waits)",
        "",
        "| `fetch_max_wait_ms` | median | p95 | max |",
        "|---|---|---|---|",
    ]
    for wait, row in results["delivery_latency"].items():
        md.append(f"| {wait} | {row['median_ms']} ms | {row['p95_ms']} ms | {row['max_ms']} ms |")
    md += [
        "",
        "Tansu 0.6.0 looks for new records at halving intervals of the wait (it sleeps half the time left, then "
        "looks again: `tansu-storage/src/service/fetch.rs` at the shipped commit 510f3e2), so a record can wait "
        "up to about half the fetch wait. Apache Kafka, by its documentation, answers a waiting fetch as soon as "
        "`fetch.min.bytes` (1) are there, so on it a long wait would cost no latency; not measured here (no Kafka "
        "on this machine).",
        "",
    ]
    (OUT / "idle.md").write_text("\n".join(md))
    print(json.dumps(figures, indent=2))


async def broker_parts(args: argparse.Namespace) -> dict[str, Any]:
    broker = EmbeddedBroker().start()
    try:
        broker_pid = int(broker.pid_file.read_text().split()[0])
        epoch = await epoch_checks(broker.bootstrap_servers, broker_pid, args.checks)
        latency = {
            str(wait): await delivery_latency(broker.bootstrap_servers, wait, args.records) for wait in (50, 500, 2000)
        }
    finally:
        broker.stop()
    return {"epoch_check": epoch, "delivery_latency": latency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after start before measuring")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured per idle run")
    parser.add_argument("--runs", type=int, default=2, help="idle runs per configuration, interleaved")
    parser.add_argument("--checks", type=int, default=200, help="broker-epoch checks per round")
    parser.add_argument("--records", type=int, default=40, help="records per fetch wait (latency)")
    parser.add_argument("--quick", action="store_true", help="1 run of 20 s, 50 checks, 10 records")
    args = parser.parse_args()
    if args.quick:
        args.settle, args.window, args.runs, args.checks, args.records = 15.0, 20.0, 1, 50, 10
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("VIGIL_DATABASE_URL", None)
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_line(),
        "load_avg_1m_at_start": os.getloadavg()[0],
        "settle_s": args.settle,
        "window_s": args.window,
        "checks": args.checks,
        "records": args.records,
    }
    stacks: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
    for _ in range(args.runs):
        for name, env in CONFIGS.items():
            stacks[name].append(idle_stack(env, args.settle, args.window))
    results: dict[str, Any] = {"idle_stack_cpu_s_per_min": stacks, **asyncio.run(broker_parts(args))}
    info["load_avg_1m_at_end"] = os.getloadavg()[0]
    write(results, info)


if __name__ == "__main__":
    main()
