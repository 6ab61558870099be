"""Auditor benchmark: ingest + chain throughput, verify throughput, ``why`` and proof latency on a 1M-entry log.

Run: ``.venv/bin/python tests/bench/bench_audit.py`` (uses ``DATABASE_URL`` if set, else an embedded Postgres in a
temporary directory). Writes ``docs/benchmarks/audit.json`` (flat keys) and ``docs/benchmarks/audit.md``.

Ingest goes through the consumer's store path exactly as a polled batch does — one transaction per 500-event
batch: inbox claim, ``append_entries`` (hash chain, one multi-row insert) and the ``audit.entry`` outbox rows (one
multi-row insert) — starting from already-decoded events (the Kafka poll and the contract check are the bus's cost,
measured by the bus, not here). Events are control-plane events in causal chains of ten, so ``why`` walks ten hops.
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

from vigil.auditor import checkpoints, store
from vigil.auditor.api import _with_event, verify_chain
from vigil.auditor.handlers import make_on_events
from vigil.auditor.merkle import blocks_needed_for_inclusion
from vigil.auditor.signing import load_signer
from vigil.bus.consumer import _claim_inbox
from vigil.bus.context import BatchContext, Delivery, Emitter
from vigil.events import Envelope, make_event
from vigil.events.catalog.data import DataUpdated
from vigil.service.db import BUS_MIGRATIONS, create_pool, migrate
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


async def ingest(pool: asyncpg.Pool, events: list[Envelope], offset: int) -> float:
    """Push ``events`` through the store path in BATCH-sized transactions; returns seconds."""
    handler = make_on_events("audit", store.DEFAULT_RETENTION)
    deliveries = [Delivery(e, None, "vigil.data", 0, offset + i) for i, e in enumerate(events)]  # type: ignore[arg-type]
    started = time.perf_counter()
    async with pool.acquire() as conn:
        for i in range(0, len(deliveries), BATCH):
            batch = deliveries[i : i + BATCH]
            async with conn.transaction():
                fresh = await _claim_inbox(conn, batch)
                await handler(BatchContext(conn, Emitter(conn, "vigil://auditor", "svc:auditor")), fresh)
    return time.perf_counter() - started


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
    results: dict[str, Any] = {}
    try:
        await migrate(pool, "auditor", [("bus", BUS_MIGRATIONS), ("auditor", MIGRATIONS)])
        signer = load_signer(None, tmp / "signing.key")

        # 1. Ingest throughput (events chained and published to the outbox per second).
        print(f"building {ingest_sample} events…", file=sys.stderr)
        sample = make_events(ingest_sample, 0)
        seconds = await ingest(pool, sample, 0)
        results["ingest_events_per_s"] = round(ingest_sample / seconds)
        print(f"ingest: {results['ingest_events_per_s']} events/s", file=sys.stderr)

        # 2. Grow the log to `total` entries through the same path, in slices (bounded memory).
        done = ingest_sample
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
        await pool.close()
        drop_database(admin_dsn, db)
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    write(out_dir, results, info)
    return results


def write(out_dir: Path, results: dict[str, Any], info: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "audit.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    rows = [
        ("ingest + chain + publish (store path, 500-event transactions)", results["ingest_events_per_s"], "events/s",
         "≥ 20 000"),
        ("verify (chain + checkpoint roots + signatures, streamed)", results["verify_entries_per_s"], "entries/s", ""),
        (f"`why`, 10 hops to the root, log of {results['log_entries']:,} (median of 25)", results["why_ms_1M"], "ms",
         "< 200"),
        ("`why` p95", results["why_ms_1M_p95"], "ms", ""),
        ("inclusion proof on the full log (median of 25)", results["inclusion_proof_ms_1M"], "ms", ""),
        ("signing a checkpoint over the whole log from scratch", results["checkpoint_1M_s"], "s", ""),
    ]  # fmt: skip
    lines = [
        "# Audit benchmark",
        "",
        "Generated by `tests/bench/bench_audit.py` — all numbers from one run. Postgres and the benchmark share the",
        "machine (and, here, its two cores with other work).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
        "## Results",
        "",
        "| what | value | unit | target |",
        "|---|---:|---|---|",
        *[f"| {what} | {value:,} | {unit} | {target} |" for what, value, unit, target in rows],
        "",
        "Ingest starts from decoded events: it measures the auditor's own work per batch (inbox claim, hash chain,",
        "a binary COPY into `audit_log`, one multi-row insert into the outbox for the `audit.entry` events),",
        "not the Kafka poll or the contract check.",
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
