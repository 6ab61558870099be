"""Auditor benchmark: ingest + chain throughput, ``audit.entry`` publishing, verify throughput, ``why`` and proof
latency on a 1M-entry log.

Run: ``.venv/bin/python tests/bench/bench_audit.py`` (uses ``DATABASE_URL`` if set, else an embedded Postgres in a
temporary directory; ``KAFKA_BOOTSTRAP`` if set, else an embedded broker, for the publisher). Writes
``docs/benchmarks/audit.json`` (flat keys) and ``docs/benchmarks/audit.md``.

Ingest goes through the consumer's own batch path (``EventConsumer._apply_batch``) with the auditor's handler and
``dedupe="handler"``, exactly as a polled batch does — one transaction per 500-event batch: pool connection, batch
span, in-batch dedupe, canonical bytes, chain lock + NOTIFY, head and known-id lookup, hash chain, binary COPY into
``audit_log``, commit — starting from already-decoded events (the Kafka poll and the contract check are the bus's
cost, measured by the bus, not here). ``audit.entry`` publishing (``EntryPublisher``: read the log after the cursor,
build the events, send, await the broker's acks, advance the cursor) is measured alone and running concurrently with
ingest. Events are control-plane events in causal chains of ten, so ``why`` walks ten hops.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from opentelemetry.context import Context

from vigil.auditor import checkpoints, store
from vigil.auditor.api import _with_event, verify_chain
from vigil.auditor.handlers import make_on_events
from vigil.auditor.merkle import blocks_needed_for_inclusion
from vigil.auditor.publisher import EntryPublisher
from vigil.auditor.signing import load_signer
from vigil.bus.consumer import ConsumerConfig, EventConsumer
from vigil.bus.context import Delivery
from vigil.bus.producer import BusProducer
from vigil.bus.topics import TopicNamer, ensure_topics
from vigil.events import Envelope, make_event, topics
from vigil.events.catalog.data import DataUpdated
from vigil.service.db import BUS_MIGRATIONS, create_pool, migrate
from vigil.stack.broker import EmbeddedBroker
from vigil.stack.postgres import EmbeddedPostgres, create_database, drop_database

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = REPO / "services" / "vigil" / "auditor" / "migrations"
BATCH = 500
CHAIN_LEN = 10


def machine_info() -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }


def make_events(n: int, start: int) -> list[Envelope]:
    """``n`` data-plane decisions in causal chains of CHAIN_LEN (each caused by the one before)."""
    template = DataUpdated(
        dataset="bench", content_digest="sha256:" + "ab" * 32, uri="file:///bench/x.csv", row_count=1, producer="b"
    )
    events: list[Envelope] = []
    cause: Envelope | None = None
    for i in range(start, start + n):
        if i % CHAIN_LEN == 0:
            cause = None
        e = make_event(template, source="bench://x", actor="system:bench", cause=cause)
        events.append(e)
        cause = e
    return events


def auditor_consumer(pool: asyncpg.Pool) -> EventConsumer:
    """The auditor's consumer as the runtime builds it (never started: the bench feeds it decoded batches)."""
    config = ConsumerConfig(service="auditor", group_id="bench", topics=[], source="vigil://auditor", dedupe="handler")
    handler = make_on_events("audit", store.DEFAULT_RETENTION)
    return EventConsumer("127.0.0.1:1", pool, config, TopicNamer(""), batch_handler=handler, trust=None)


async def ingest(pool: asyncpg.Pool, events: list[Envelope], offset: int) -> float:
    """Push ``events`` through the consumer's batch path in BATCH-sized transactions; returns seconds."""
    consumer = auditor_consumer(pool)
    deliveries = [Delivery(e, None, "vigil.data", 0, offset + i) for i, e in enumerate(events)]  # type: ignore[arg-type]
    contexts = [Context()] * BATCH
    started = time.perf_counter()
    for i in range(0, len(deliveries), BATCH):
        batch = deliveries[i : i + BATCH]
        assert await consumer._apply_batch(batch, contexts[: len(batch)])
    return time.perf_counter() - started


async def publish_until(publisher: EntryPublisher, pool: asyncpg.Pool, seq: int) -> None:
    """Run the publisher's batches until every entry up to ``seq`` was published and acked."""
    while await pool.fetchval("SELECT last_seq FROM audit_publish_cursor") < seq:
        if not await publisher.publish_batch():
            await asyncio.sleep(0.01)


class LoadSampler:
    """1-minute load average, sampled every second while the benchmark runs (other work shares the machine)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            await asyncio.sleep(1.0)

    def __enter__(self) -> LoadSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def summary(self) -> dict[str, float]:
        s = self.samples or [os.getloadavg()[0]]
        return {"min": round(min(s), 2), "mean": round(statistics.fmean(s), 2), "max": round(max(s), 2)}


async def main(total: int, ingest_sample: int, out_dir: Path) -> dict[str, Any]:
    info = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-audit-"))
    server = None
    admin_dsn = os.environ.get("DATABASE_URL")
    if not admin_dsn:
        server = EmbeddedPostgres(tmp / "pg", durable=False).start()
        admin_dsn = server.dsn
    db = f"bench_audit_{uuid.uuid4().hex[:8]}"
    dsn = create_database(admin_dsn, db)
    pool = await create_pool(dsn, "auditor", min_size=1, max_size=4)
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = EmbeddedBroker(None, log_file=tmp / "broker.log").start()
        bootstrap = broker.bootstrap_servers
    namer = TopicNamer(f"bench.{uuid.uuid4().hex[:8]}.")
    await ensure_topics(bootstrap, [namer.physical(topics.AUDIT)], 1, 1)
    producer = BusProducer(bootstrap, service="auditor", namer=namer, signer=None)  # nobody verifies here
    await producer.start()
    publisher = EntryPublisher(pool, producer, chain="audit", schema="auditor")
    results: dict[str, Any] = {}
    loads: dict[str, dict[str, float]] = {}
    try:
        await migrate(pool, "auditor", [("bus", BUS_MIGRATIONS), ("auditor", MIGRATIONS)])
        signer = load_signer(None, tmp / "signing.key")

        # 1. Ingest throughput: decoded events → dedupe → chain → COPY, committed (publisher not running).
        print(f"building {ingest_sample} events…", file=sys.stderr)
        sample = make_events(ingest_sample, 0)
        with LoadSampler() as load:
            seconds = await ingest(pool, sample, 0)
        results["ingest_events_per_s"] = round(ingest_sample / seconds)
        loads["ingest"] = load.summary()
        print(f"ingest: {results['ingest_events_per_s']} events/s", file=sys.stderr)

        # 1b. The same events again (a redelivery of everything): found in the chain, nothing appended.
        redelivered = sample[: ingest_sample // 5]
        seconds = await ingest(pool, redelivered, 0)
        assert await pool.fetchval("SELECT count(*) FROM audit_log") == ingest_sample
        results["redelivered_events_per_s"] = round(len(redelivered) / seconds)

        # 2. audit.entry publishing alone: the sample's entries from the log to the broker, acked, cursor advanced.
        with LoadSampler() as load:
            t = time.perf_counter()
            await publish_until(publisher, pool, ingest_sample)
            seconds = time.perf_counter() - t
        results["publish_entries_per_s"] = round(ingest_sample / seconds)
        loads["publish"] = load.summary()
        print(f"publish: {results['publish_entries_per_s']} entries/s", file=sys.stderr)

        # 3. Both at once, as in production: ingest with the publisher running beside it (sharing the cores).
        concurrent = make_events(ingest_sample, ingest_sample)
        with LoadSampler() as load:
            t = time.perf_counter()
            running = asyncio.create_task(publish_until(publisher, pool, 2 * ingest_sample))
            seconds = await ingest(pool, concurrent, ingest_sample)
            await running
            both = time.perf_counter() - t
        results["ingest_with_publisher_events_per_s"] = round(ingest_sample / seconds)
        results["ingest_and_publish_events_per_s"] = round(ingest_sample / both)
        loads["concurrent"] = load.summary()
        print(
            f"ingest with publisher: {results['ingest_with_publisher_events_per_s']} events/s; "
            f"all published: {results['ingest_and_publish_events_per_s']} events/s",
            file=sys.stderr,
        )
        del sample, redelivered, concurrent

        # 2. Grow the log to `total` entries through the same path, in slices (bounded memory).
        done = 2 * ingest_sample
        while done < total:
            n = min(50_000, total - done)
            await ingest(pool, make_events(n, done), done)
            done += n
            print(f"  log: {done} entries", file=sys.stderr)
        async with pool.acquire() as conn:
            await conn.execute("VACUUM ANALYZE audit_log")

        # 3. Checkpoint over the whole log (frontier + blocks), then verify (chain + roots + signatures).
        async with pool.acquire() as conn, conn.transaction():
            t = time.perf_counter()
            made = await checkpoints.make_checkpoint(conn, signer, "audit", "vigil://auditor")
            results["checkpoint_1M_s"] = round(time.perf_counter() - t, 2)
        assert made is not None and made.to_seq == total
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            t = time.perf_counter()
            report = await verify_chain(conn, signer)
            seconds = time.perf_counter() - t
        assert report.ok and report.entries_checked == total, report
        results["verify_entries_per_s"] = round(total / seconds)
        print(f"verify: {results['verify_entries_per_s']} entries/s", file=sys.stderr)

        # 4. why: walk chain tails (ten hops down to the root) on the full log, with each event parsed.
        rng = random.Random(7)
        async with pool.acquire() as conn:
            tails = [
                await conn.fetchval("SELECT event_id FROM audit_log WHERE seq = $1", (k * CHAIN_LEN) + CHAIN_LEN)
                for k in rng.sample(range(total // CHAIN_LEN - 1), 25)
            ]
            timings = []
            for event_id in tails:
                t = time.perf_counter()
                rows = await store.why_walk(conn, event_id, 1000)
                chain = [_with_event(r) for r in rows]
                timings.append((time.perf_counter() - t) * 1000)
                assert len(chain) == CHAIN_LEN and chain[-1].causation_id is None
            results["why_ms_1M"] = round(statistics.median(timings), 2)
            results["why_ms_1M_p95"] = round(sorted(timings)[int(len(timings) * 0.95) - 1], 2)
            print(f"why: {results['why_ms_1M']} ms median", file=sys.stderr)

            # 5. Inclusion proof on the full log (block roots + two blocks of leaves).
            timings = []
            for seq in rng.sample(range(1, total + 1), 25):
                t = time.perf_counter()
                view = await checkpoints.tree_view(conn, total, blocks_needed_for_inclusion(seq - 1, total))
                view.inclusion_path(seq - 1)
                timings.append((time.perf_counter() - t) * 1000)
            results["inclusion_proof_ms_1M"] = round(statistics.median(timings), 2)
        results["log_entries"] = total
        results["ingest_sample_events"] = ingest_sample
    finally:
        await producer.stop()
        await pool.close()
        drop_database(admin_dsn, db)
        if broker is not None:
            broker.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    info["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    info["broker"] = "external (KAFKA_BOOTSTRAP)" if broker is None else "embedded (Tansu, in memory)"
    for phase, summary in loads.items():
        results[f"load_avg_1m_{phase}"] = summary
    write(out_dir, results, info)
    return results


def write(out_dir: Path, results: dict[str, Any], info: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "audit.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))

    def load(phase: str) -> str:
        s = results[f"load_avg_1m_{phase}"]
        return f"{s['min']}–{s['max']} (mean {s['mean']})"

    rows = [
        ("ingest + chain (consumer batch path, dedupe by the chain, 500-event transactions)",
         results["ingest_events_per_s"], "events/s", "≥ 20 000", load("ingest")),
        ("… with the `audit.entry` publisher running concurrently", results["ingest_with_publisher_events_per_s"],
         "events/s", "", load("concurrent")),
        ("… until every one of those entries was published and acked", results["ingest_and_publish_events_per_s"],
         "events/s", "", load("concurrent")),
        ("`audit.entry` publishing alone (log → broker, acked, cursor advanced)", results["publish_entries_per_s"],
         "entries/s", "", load("publish")),
        ("a redelivered batch (every id already chained: nothing appended)", results["redelivered_events_per_s"],
         "events/s", "", ""),
        ("verify (chain + checkpoint roots + signatures, streamed)", results["verify_entries_per_s"], "entries/s", "",
         ""),
        (f"`why`, 10 hops to the root, log of {results['log_entries']:,} (median of 25)", results["why_ms_1M"], "ms",
         "< 200", ""),
        ("`why` p95", results["why_ms_1M_p95"], "ms", "", ""),
        ("inclusion proof on the full log (median of 25)", results["inclusion_proof_ms_1M"], "ms", "", ""),
        ("signing a checkpoint over the whole log from scratch", results["checkpoint_1M_s"], "s", "", ""),
    ]  # fmt: skip
    lines = [
        "# Audit benchmark",
        "",
        "Generated by `tests/bench/bench_audit.py` — all numbers from one run. Postgres, the broker and the benchmark",
        "share the machine (and, here, its two cores with other work: the load average column is the 1-minute load",
        "sampled every second during that measurement).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
        "## Results",
        "",
        "| what | value | unit | target | load avg (1 min) during |",
        "|---|---:|---|---|---|",
        *[f"| {what} | {value:,} | {unit} | {target} | {ld} |" for what, value, unit, target, ld in rows],
        "",
        "Ingest starts from decoded events and goes through the consumer's own batch path with the auditor's handler:",
        "per 500-event transaction, in-batch dedupe, canonical bytes, the chain lock (with the NOTIFY that wakes the",
        "publisher), one query for the chain head and the batch's ids already chained, the hash chain, one binary",
        "`COPY` into `audit_log` (heap + 6 indexes), commit — everything the ingest transaction does; not the Kafka",
        "poll or the contract check. There is no inbox row and no outbox row per entry any more: the chain",
        "deduplicates by event id, and `audit.entry` is published from `audit_log` by the publisher (docs/audit.md).",
        "",
        f"Ingest samples: {results['ingest_sample_events']:,} events alone, then {results['ingest_sample_events']:,} "
        "more with the publisher running; the rest of the log is grown through the same path.",
        "",
    ]
    (out_dir / "audit.md").write_text("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--ingest-sample", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    args = parser.parse_args()
    print(orjson.dumps(asyncio.run(main(args.entries, args.ingest_sample, args.out))).decode())
