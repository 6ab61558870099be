"""Monitor benchmark: rows/s through the window update path, decision latency, false-positive rate.

Run: ``.venv/bin/python tests/bench/bench_monitor.py`` (not collected by pytest). Writes
``docs/benchmarks/monitor.json`` (flat keys) and ``docs/benchmarks/monitor.md``.

- ``predictions_per_s``: the CPU path of one ``prediction.logged`` record, everything the bus consumer and
  ``handlers.on_prediction_logged`` do outside I/O — decode (the bus's contract check and the payload model), fold
  into the window state (20 numeric features binned on 1 024 reference bins, prediction histogram, latency sketch,
  the label-free estimate and the multivariate/OOD fold: the reference profile is built by the trainer's code),
  build the label-join columns and add them to the index, and serialise the window state and the join batch (the
  two Postgres values written per batch). Single process (the binning kernel may use both cores); records of
  2 200 rows (what fits in 1 MiB with 20 float64 features and 32-char ids). Broker and Postgres I/O are not
  included.
- ``rollback_decision_*``: from "the closer picks a due window pair" to the ``rollback.requested`` payload built:
  figures of a stable and a candidate window (20 features each, drift report, quality, latency) and the policy
  evaluation. The Postgres transaction and the relay's publish come on top (a few ms on the embedded stack).
- ``false_positive_rate_clean_windows``: windows of 1 000 clean rows judged under the default policy.
- ``predictions_per_s_end_to_end``: the running monitor service (in-process, on the embedded broker and Postgres
  that ``tests/support/testinfra.py`` starts, as the tests do) consuming prediction batches already on
  ``vigil.predictions``: the bus consumer's fetch and contract check, fold, join, the Postgres transaction per
  polled batch (inbox rows, window state, join batches, watermark), offset commits — from the first row applied to
  the last (the consumer-group join before it is not the monitor's steady state). Four deployments, so the four
  partitions are all busy; the broker, Postgres and the monitor share the same 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
sys.path.insert(0, str(ROOT / "tests"))  # the in-process service harness (tests/support)

from bench_host import machine_line  # noqa: E402

from support import signing, testinfra  # noqa: E402
from vigil.events import decode_event, make_event  # noqa: E402
from vigil.events.catalog.streams import PredictionLogged  # noqa: E402
from vigil.events.contracts import decode_event_deferred  # noqa: E402
from vigil.kernels.profile import DatasetProfile  # noqa: E402
from vigil.monitor.decisions import evaluate  # noqa: E402
from vigil.monitor.estimates import parse_calibration  # noqa: E402
from vigil.monitor.figures import compute_figures  # noqa: E402
from vigil.monitor.ingest import fold_predictions  # noqa: E402
from vigil.monitor.joins import JoinIndex, encode_batch  # noqa: E402
from vigil.monitor.multivariate import parse_multivariate  # noqa: E402
from vigil.monitor.policy import DEFAULT_POLICY  # noqa: E402
from vigil.monitor.state import WindowState  # noqa: E402
from vigil.trainer.profiling import reference_profile_dict  # noqa: E402

FEATURES = [f"f{i:02d}" for i in range(20)]
ROWS = 2_200  # with 32-char ids and full-precision floats this is what fits in 1 MiB


def _batch(
    rng: np.random.Generator,
    variant: str = "stable",
    version: int = 1,
    latency: float = 20.0,
    deployment: str = "bench",
    model: str = "m",
) -> bytes:
    x = rng.normal(size=(ROWS, len(FEATURES)))
    score = 1 / (1 + np.exp(-x[:, 0]))
    now = datetime.now(UTC)
    payload = PredictionLogged(
        deployment=deployment, model=model, version=version, variant=variant, first_at=now, last_at=now,
        prediction_ids=[uuid.uuid4().hex for _ in range(ROWS)],
        numeric={n: x[:, j].tolist() for j, n in enumerate(FEATURES)},
        outputs=(score >= 0.5).astype(float).tolist(), scores=score.tolist(),
        latency_ms=(latency * (0.5 + rng.random(ROWS))).tolist(),
    )  # fmt: skip
    return make_event(payload, source="vigil://bench", actor="svc:bench").canonical_bytes()


def _decode(raw: bytes) -> PredictionLogged:
    """What the bus consumer and the handler do to a record: the contract check, then the payload model."""
    envelope, payload_cls, payload = decode_event_deferred(raw)
    if payload is None:
        payload = payload_cls.model_validate(envelope.data)
    assert isinstance(payload, PredictionLogged)
    return payload


def bench_ingest(
    ref: DatasetProfile, records: list[bytes], seconds: float = 8.0, body: dict[str, Any] | None = None
) -> dict[str, float]:
    """See ``predictions_per_s``; with ``body`` (the profile as the trainer stores it), its calibration map and
    multivariate reference are applied too, as the service applies them."""
    calibration = parse_calibration(body) if body is not None else None
    multivariate = parse_multivariate(body, ref) if body is not None else None
    st = WindowState("bench", "m", 1, "stable", 0, 60_000)
    index = JoinIndex()
    decode_s = fold_s = 0.0
    rows = 0
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        raw = records[i % len(records)]
        t0 = time.perf_counter()
        payload = _decode(raw)
        t1 = time.perf_counter()
        cols = fold_predictions(
            st, payload, ref, prediction_bins=10, fairness_attribute=None, calibration=calibration,
            multivariate=multivariate,
        )  # fmt: skip
        index.add(st.key, cols)
        encode_batch(st.key, cols)
        st.to_bytes()
        t2 = time.perf_counter()
        decode_s += t1 - t0
        fold_s += t2 - t1
        rows += ROWS
        i += 1
        if i % 500 == 0:  # a new window now and then, like the closer would: bounded join index
            index = JoinIndex()
    elapsed = time.perf_counter() - start
    t0 = time.perf_counter()
    for raw in records[:20]:
        decode_event(raw)
    full_decode_ms = (time.perf_counter() - t0) / 20 * 1000
    return {
        "predictions_per_s": rows / elapsed,
        "records": float(i),
        "decode_ms_per_record": decode_s / i * 1000,
        "fold_ms_per_record": fold_s / i * 1000,
        "full_schema_decode_ms_per_record": full_decode_ms,
        "window_state_bytes": float(len(st.to_bytes())),
    }


def bench_decision(ref: DatasetProfile, rng: np.random.Generator, runs: int = 200) -> dict[str, float]:
    stable = WindowState("bench", "m", 1, "stable", 0, 60_000)
    cand = WindowState("bench", "m", 2, "candidate", 0, 60_000)
    for _ in range(5):
        fold_predictions(stable, _decode(_batch(rng)), ref, prediction_bins=10, fairness_attribute=None)
        raw = _batch(rng, "candidate", 2, latency=60.0)
        fold_predictions(cand, _decode(raw), ref, prediction_bins=10, fairness_attribute=None)
    lat = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fs = compute_figures(stable, ref)
        fc = compute_figures(cand, ref)
        decisions = evaluate(DEFAULT_POLICY, 1, fc, [], fs)
        lat.append((time.perf_counter() - t0) * 1000)
        assert any(d.payload.TYPE == "rollback.requested" for d in decisions)
    lat.sort()
    return {
        "rollback_decision_p50_ms": statistics.median(lat),
        "rollback_decision_p99_ms": lat[int(0.99 * (len(lat) - 1))],
    }


def bench_false_positives(ref: DatasetProfile, rng: np.random.Generator, windows: int = 500) -> dict[str, float]:
    flagged = 0
    for i in range(windows):
        st = WindowState("bench", "m", 1, "stable", i * 60_000, (i + 1) * 60_000)
        st.numeric = ref.window(np.asfortranarray(rng.normal(size=(1_000, len(FEATURES))))).numeric
        st.predictions = 1_000
        flagged += bool(evaluate(DEFAULT_POLICY, 1, compute_figures(st, ref)))
    return {"false_positive_rate_clean_windows": flagged / windows, "clean_windows": float(windows)}


async def _stream_end_to_end(
    body: dict[str, Any], rng: np.random.Generator, bootstrap: str, dsn: str, tmp: Path, records_n: int
) -> dict[str, float]:
    """See ``predictions_per_s_end_to_end`` in the module docstring."""
    from aiokafka import AIOKafkaProducer

    from support.kafka import produce_raw
    from support.services import make_tokens, running, settings_for
    from vigil.events.catalog.models import ModelVersionRegistered
    from vigil.monitor.app import make_app
    from vigil.monitor.settings import MonitorSettings

    prefix = testinfra.unique_name("bench.") + "."
    deployments = [f"bench-{i}" for i in range(4)]
    registered = make_event(
        ModelVersionRegistered(
            model="m", version=1, source="manual", artifact_digest="sha256:" + "0" * 64,
            artifact_uri="file:///bench/m/1", artifact_format="json", reference_profile=body,
            reference_profile_digest="sha256:" + "1" * 64,
        ),
        source="vigil://bench", actor="svc:bench",
    )  # fmt: skip
    records = [_batch(rng, deployment=deployments[i % 4]) for i in range(records_n)]
    settings = settings_for(
        MonitorSettings, dsn=dsn, bootstrap=bootstrap, prefix=prefix, tokens=make_tokens(tmp),
        kafka_topic_partitions=4, window_s=3600.0, tick_s=1.0, policy_cache_s=60.0,
    )  # fmt: skip
    async with running(make_app(settings)) as mon:  # a first run only stores the reference profile
        await produce_raw(bootstrap, f"{prefix}vigil.models", [registered.canonical_bytes()], key=b"m")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if await mon.runtime.pool.fetchval("SELECT count(*) FROM reference_profiles"):
                break
            await asyncio.sleep(0.1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024, linger_ms=5)
    await producer.start()
    signed = signing.signing_key("service:deployer").sign_values(records)  # as the gateway signs them
    try:  # all batches on the topic before the measured run starts
        sent = [
            await producer.send(f"{prefix}vigil.predictions", r, key=deployments[i % 4].encode(), headers=signed[i])
            for i, r in enumerate(records)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    applied_before = _applied_rows()
    async with running(make_app(settings)):
        total = records_n * ROWS
        first: float | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            applied = _applied_rows() - applied_before
            if applied and first is None:
                first, first_rows = time.perf_counter(), applied
            if applied >= total:
                break
            await asyncio.sleep(0.005)
        last = time.perf_counter()
    assert first is not None and applied >= total, f"only {applied} of {total} rows applied"
    return {
        "predictions_per_s_end_to_end": (total - first_rows) / (last - first),
        "end_to_end_records": float(records_n),
        "end_to_end_seconds": last - first,
    }


def _applied_rows() -> float:
    """Prediction rows folded by the in-process monitor (its batch handler's counter)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("vigil_monitor_rows_total", {"stream": "predictions", "outcome": "applied"}) or 0.0


def bench_stream_end_to_end(body: dict[str, Any], rng: np.random.Generator, records_n: int = 360) -> dict[str, float]:
    workdir = testinfra.make_workdir()
    kafka = testinfra.start_kafka(workdir)
    postgres = testinfra.start_postgres(workdir)
    try:
        _name, dsn = postgres.create_database()
        return asyncio.run(_stream_end_to_end(body, rng, kafka.bootstrap_servers, dsn, workdir, records_n))
    finally:
        postgres.close()
        kafka.close()
        testinfra.remove_workdir(workdir)


def main() -> None:
    signing.install()  # event keys for the in-process monitor (VIGIL_EVENT_KEYS_DIR), as the tests' conftest does
    load_at_start = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    # The reference profile as the trainer stores it (#21): bins, a calibration map (label-free estimates) and the
    # PCA/OOD reference (multivariate drift and OOD share) — the monitor applies all three on every batch.
    x = np.asfortranarray(rng.normal(size=(100_000, len(FEATURES))))
    held = 1 / (1 + np.exp(-x[:5_000, 0]))
    profile = reference_profile_dict(
        x, FEATURES, calibration_scores=held, calibration_labels=(rng.random(5_000) < held).astype(int)
    )
    profile = json.loads(json.dumps(profile))  # as it travels
    assert "calibration" in profile and "multivariate" in profile
    ref = DatasetProfile.from_dict(profile)
    records = [_batch(rng) for _ in range(16)]
    bench_ingest(ref, records, seconds=1.0, body=profile)  # warm up (numba cache, allocators)
    results = {
        **bench_ingest(ref, records, body=profile),
        **bench_decision(ref, rng),
        **bench_false_positives(ref, rng),
        **bench_stream_end_to_end(profile, rng),
        "features": float(len(FEATURES)),
        "rows_per_record": float(ROWS),
        "load_avg_1m_at_start": load_at_start,
    }
    measured_at = datetime.now(UTC).isoformat(timespec="seconds")
    out = ROOT / "docs" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    body: dict[str, object] = {k: round(v, 4) for k, v in results.items()}
    body["measured_at"] = measured_at
    (out / "monitor.json").write_text(json.dumps(body, indent=2) + "\n")
    machine = machine_line()
    r = results
    rows = [
        ("predictions/s (window update path, 20 features, one process)", f"{r['predictions_per_s']:,.0f}", "≥ 100 000"),
        (f"predictions/s end to end (running monitor on the embedded broker, {int(r['end_to_end_records'])} records)",
         f"{r['predictions_per_s_end_to_end']:,.0f}", "≥ 100 000"),
        ("decode per record (envelope schema + payload model)", f"{r['decode_ms_per_record']:.1f} ms", ""),
        ("decode per record, full schema path", f"{r['full_schema_decode_ms_per_record']:.1f} ms", ""),
        ("fold + join + serialise per record", f"{r['fold_ms_per_record']:.1f} ms", ""),
        ("window close → rollback.requested built, p50", f"{r['rollback_decision_p50_ms']:.1f} ms", ""),
        ("window close → rollback.requested built, p99", f"{r['rollback_decision_p99_ms']:.1f} ms", "≤ 1 000 ms"),
        (f"false-positive rate, {int(r['clean_windows'])} clean windows × 1 000 rows",
         f"{r['false_positive_rate_clean_windows']:.4f}", ""),
        ("serialised window state (a window_state row)", f"{r['window_state_bytes'] / 1024:.0f} kB", ""),
    ]  # fmt: skip
    lines = [
        "# Monitor benchmark",
        "",
        f"Machine: {machine}, {platform.system()} {platform.release()}; load average {load_at_start:.2f} at start.",
        "Produced by `.venv/bin/python tests/bench/bench_monitor.py`; see its docstring for what each figure covers.",
        "",
        "| metric | value | target |",
        "|---|---|---|",
        *(f"| {name} | {value} | {target} |" for name, value, target in rows),
        "",
    ]
    (out / "monitor.md").write_text("\n".join(lines))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
