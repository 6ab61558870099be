"""Drift benchmark: Vigil's kernels vs scipy, numpy and Evidently on synthetic data with known drift, in one run.

    .venv/bin/python tests/bench/bench_drift.py            # full: 20 × 1M and 1k × 10M, writes docs/benchmarks/
    .venv/bin/python tests/bench/bench_drift.py --quick    # small sizes, writes to /tmp/vigil-bench (see --out-dir)

Cases
- 20 features × 1M rows float64, window vs stored reference profile: Vigil's full drift report (bin the raw window
  on the reference edges + PSI/JS/Hellinger/χ²/KS/W1 for every feature), median of repeats; also the report from
  two ready profiles (what the monitor does when it keeps window profiles as batches arrive). Baselines in the same
  run: scipy ks_2samp and wasserstein_distance per feature, numpy quantile-histogram PSI, Evidently's
  DataDriftPreset. Agreement: KS vs ks_2samp within the documented bound, W1 vs scipy within its bound, PSI vs numpy
  on the same buckets. In the same run, ``read_floor_ms``: numpy's ``sum`` over the same array — one plain read, the
  floor no binning can beat — and the load average around the timed repeats (the machine may be shared).
- 1k features × 10M rows, streamed in chunks through one ``NumericAccumulator`` (bounded memory), in a child
  process so its peak RSS is its own. Data generation time is excluded from rows/s and reported separately.

Not a test: pytest does not collect it (bench_*.py), and timings are never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit, prange

from vigil.kernels.drift import numeric_drift
from vigil.kernels.profile import DatasetProfile, NumericAccumulator, quantile_edges
from vigil.kernels.report import DriftThresholds, drift_report, drift_report_from_data

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit" / "kernels"))  # naive.py: the kernels' plain references
import naive  # noqa: E402

N_DRIFTED_20 = 5  # features 0..4 of the 20-feature case drift (location, scale and shape changes)


def machine_info() -> dict[str, Any]:
    import numba
    import psutil
    import scipy

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
        "numba_threads": numba.get_num_threads(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scipy": scipy.__version__,
        "load_avg_1m_at_start": os.getloadavg()[0],
    }


def make_20(rows: int, seed: int, drift: bool) -> np.ndarray:
    """20 features: normals of different location/scale, 3 lognormal, 2 discrete; 5 of them drift in the window."""
    rng = np.random.default_rng(seed)
    x = np.empty((rows, 20), order="F")
    for f in range(20):
        if f in (15, 16, 17):
            x[:, f] = rng.lognormal(0, 0.7, rows)
        elif f in (18, 19):
            x[:, f] = rng.poisson(3 + f, rows)
        else:
            x[:, f] = rng.normal(f, 1 + f / 10, rows)
    if drift:
        x[:, 0] += 0.5
        x[:, 1] += 0.5 * (1 + 1 / 10)
        x[:, 2] *= 1.3
        x[:, 3] = x[:, 3] - 3 + 0.3 * rng.standard_cauchy(rows).clip(-50, 50)
        x[:, 4] += 1.0 * (1 + 4 / 10)
    return x


def timed(fn: Any, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def case_20(rows: int, repeats: int, with_evidently: bool) -> dict[str, Any]:
    from scipy import stats

    out: dict[str, Any] = {"rows_20": rows}
    ref_x = make_20(rows, 1, drift=False)
    win_x = make_20(rows, 2, drift=True)

    t = time.perf_counter()
    reference = DatasetProfile.build(ref_x)
    out["vigil_reference_profile_20x1M_ms"] = (time.perf_counter() - t) * 1e3
    stored = DatasetProfile.from_bytes(reference.to_bytes())  # what the monitor loads from the registry
    out["reference_profile_bytes_20"] = len(reference.to_bytes())

    drift_report_from_data(stored, win_x)  # warm: load cached kernels, start the thread pool
    out["load_avg_1m_before_timing"] = os.getloadavg()[0]
    med, times = timed(lambda: drift_report_from_data(stored, win_x), repeats)
    out["vigil_drift_20x1M_ms"] = med * 1e3
    out["vigil_drift_20x1M_min_ms"] = min(times) * 1e3
    # the floor: one plain read of the same 160 MB (numpy's SIMD sum, one core) — binning cannot beat a read
    med, times = timed(lambda: win_x.sum(axis=0), repeats)
    out["read_floor_ms"] = med * 1e3
    out["read_floor_min_ms"] = min(times) * 1e3
    out["load_avg_1m_after_timing"] = os.getloadavg()[0]
    window = stored.window(win_x)
    med, _ = timed(lambda: drift_report(stored, window), max(repeats, 20))
    out["vigil_drift_from_profiles_20x1M_ms"] = med * 1e3
    med, _ = timed(lambda: stored.window(win_x), repeats)
    out["vigil_window_profile_20x1M_ms"] = med * 1e3
    report = drift_report(stored, window)
    out["vigil_drifted_features_20"] = report.n_drifted
    out["vigil_drifted_expected_20"] = N_DRIFTED_20

    assert stored.numeric is not None and window.numeric is not None
    d = numeric_drift(stored.numeric, window.numeric)
    t = time.perf_counter()
    ks_exact = np.array([stats.ks_2samp(ref_x[:, f], win_x[:, f]).statistic for f in range(20)])
    out["scipy_ks_20x1M_s"] = time.perf_counter() - t
    t = time.perf_counter()
    w1_exact = np.array([stats.wasserstein_distance(ref_x[:, f], win_x[:, f]) for f in range(20)])
    out["scipy_w1_20x1M_s"] = time.perf_counter() - t
    t = time.perf_counter()
    for f in range(20):  # the textbook numpy PSI: decile edges of the reference, histogram both
        e = np.quantile(ref_x[:, f], np.linspace(0, 1, 11))
        e[0], e[-1] = -np.inf, np.inf
        p = np.histogram(ref_x[:, f], e)[0] / rows
        q = np.histogram(win_x[:, f], e)[0] / rows
        p, q = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
        float(np.sum((q - p) * np.log(q / p)))
    out["numpy_psi_20x1M_s"] = time.perf_counter() - t

    out["max_ks_error"] = float(np.max(np.abs(ks_exact - d.ks)))
    out["max_ks_bound"] = float(np.max(d.ks_upper - d.ks))
    out["ks_within_bound"] = int(bool(np.all((d.ks <= ks_exact + 1e-12) & (ks_exact <= d.ks_upper + 1e-12))))
    # per reference σ: a relative error is meaningless where W1 itself is ~0 (the undrifted features)
    out["max_w1_error_per_sigma"] = float(np.max(np.abs(d.w1 - w1_exact) / stored.numeric.std))
    out["max_w1_rel_error_drifted"] = float(np.max(np.abs(d.w1 - w1_exact)[:N_DRIFTED_20] / w1_exact[:N_DRIFTED_20]))
    out["w1_within_bound"] = int(bool(np.all(np.abs(d.w1 - w1_exact) <= d.w1_bound + 1e-12)))
    # the unit tests' slow references (tests/unit/kernels/naive.py) on the kernel's own coarse buckets
    psi_np, js_chi2 = [], []
    for f in range(20):
        groups = naive.coarse_group_of_bins(stored.numeric.feature_counts(f), 10)
        edges = stored.numeric.edges.feature(f)
        rc = naive.coarse_counts(ref_x[:, f], edges, groups, 10)
        wc = naive.coarse_counts(win_x[:, f], edges, groups, 10)
        psi_np.append(naive.psi(rc, wc))
        js_chi2.append((naive.js_distance(rc, wc), naive.chi2(rc, wc)[0]))
    js_chi2_np = np.array(js_chi2)
    out["max_js_abs_error"] = float(np.max(np.abs(js_chi2_np[:, 0] - d.js)))
    out["max_chi2_rel_error"] = float(np.max(np.abs(js_chi2_np[:, 1] - d.chi2) / np.maximum(js_chi2_np[:, 1], 1e-300)))
    out["max_psi_abs_error"] = float(np.max(np.abs(np.array(psi_np) - d.psi)))

    out["vigil_drifted_w1_norm_rule_20"] = drift_report(
        stored, window, DriftThresholds(numeric_method="w1_norm")
    ).n_drifted
    if with_evidently:
        out.update(run_evidently(ref_x, win_x))
        theirs = out.pop("evidently_w1_norm", None)
        if theirs and all(v is not None for v in theirs):
            out["max_w1_norm_abs_diff_vs_evidently"] = float(np.max(np.abs(np.array(theirs) - d.w1_norm)))
    else:
        out["evidently_20x1M_s"] = None
        out["evidently_skipped_reason"] = "--no-evidently"
    if out.get("evidently_20x1M_s"):
        out["speedup_vs_evidently"] = out["evidently_20x1M_s"] * 1e3 / out["vigil_drift_20x1M_ms"]
    else:
        out["speedup_vs_evidently"] = None
    out["speedup_vs_scipy_ks"] = out["scipy_ks_20x1M_s"] * 1e3 / out["vigil_drift_20x1M_ms"]
    return out


def run_evidently(ref_x: np.ndarray, win_x: np.ndarray) -> dict[str, Any]:
    """Evidently 0.7 DataDriftPreset on the same data (one run: it takes minutes). Failures are recorded."""
    try:
        import evidently
        import pandas as pd
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset
    except Exception as exc:
        return {"evidently_20x1M_s": None, "evidently_skipped_reason": f"import failed: {exc!r}"[:300]}
    cols = [f"f{i}" for i in range(ref_x.shape[1])]
    try:
        t = time.perf_counter()
        definition = DataDefinition(numerical_columns=cols)
        ref = Dataset.from_pandas(pd.DataFrame(ref_x, columns=cols), data_definition=definition)
        cur = Dataset.from_pandas(pd.DataFrame(win_x, columns=cols), data_definition=definition)
        snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
        elapsed = time.perf_counter() - t
        found: dict[str, Any] = {"evidently_20x1M_s": elapsed, "evidently_version": evidently.__version__}
        w1_norm = {}
        for m in snapshot.dict().get("metrics", []):
            name = str(m.get("metric_name", ""))
            if name.startswith("DriftedColumnsCount"):
                found["evidently_drifted"] = m["value"]["count"]
            elif name.startswith("ValueDrift(column=") and "Wasserstein" in name:
                w1_norm[name.split("column=", 1)[1].split(",", 1)[0]] = float(m["value"])
        found["evidently_w1_norm"] = [w1_norm.get(c) for c in cols]
        return found
    except Exception as exc:
        return {"evidently_20x1M_s": None, "evidently_skipped_reason": f"run failed: {exc!r}"[:300]}


@njit(parallel=True, cache=True)
def _fill_chunk(out, pool, offsets, loc, scale):  # type: ignore[no-untyped-def]
    """Synthetic chunk (column-major): feature f reads the normal pool from its own offset, then loc/scale."""
    n_rows, n_features = out.shape
    p = pool.size
    for f in prange(n_features):
        o = offsets[f]
        for i in range(n_rows):
            out[i, f] = pool[(o + i) % p] * scale[f] + loc[f]


def case_big(rows: int, features: int, chunk: int, ref_rows: int) -> dict[str, Any]:
    """Reference from ``ref_rows`` rows (edges from the first chunk), then ``rows`` window rows streamed."""
    rng = np.random.default_rng(3)
    pool = rng.standard_normal(1 << 22)
    loc = rng.normal(0, 5, features)
    scale = rng.uniform(0.5, 3, features)
    buf = np.empty((chunk, features), order="F")
    gen_s = 0.0

    def fill(seed: int, drift: bool) -> np.ndarray:
        nonlocal gen_s
        t = time.perf_counter()
        offs = np.random.default_rng(seed).integers(0, pool.size, features)
        lo = loc + (np.where(np.arange(features) < features // 10, scale * 0.6, 0.0) if drift else 0.0)
        _fill_chunk(buf, pool, offs, lo, scale)
        gen_s += time.perf_counter() - t
        return buf

    t0 = time.perf_counter()
    edges = quantile_edges(fill(0, False))
    acc_ref = NumericAccumulator(edges)
    for k in range(ref_rows // chunk):
        acc_ref.update(fill(10_000 + k, False))
    reference = DatasetProfile(acc_ref.profile())
    ref_s = time.perf_counter() - t0 - gen_s

    gen_before = gen_s
    t0 = time.perf_counter()
    acc = NumericAccumulator(edges)
    for k in range(rows // chunk):
        acc.update(fill(20_000 + k, True))
    report = drift_report(reference, DatasetProfile(acc.profile()))
    window_gen = gen_s - gen_before
    vigil_s = time.perf_counter() - t0 - window_gen
    peak_kb = peak_rss_kb()
    return {
        "rows_1k": (rows // chunk) * chunk,
        "features_1k": features,
        "chunk_rows_1k": chunk,
        "vigil_1kx10M_s": vigil_s,
        "rows_per_s_1kx10M": (rows // chunk) * chunk / vigil_s,
        "values_per_s_1kx10M": (rows // chunk) * chunk * features / vigil_s,
        "vigil_reference_1k_s": ref_s,
        "reference_rows_1k": (ref_rows // chunk) * chunk,
        "data_generation_1kx10M_s": window_gen,
        "peak_rss_mb_1kx10M": peak_kb / 1024,
        "drifted_features_1k": report.n_drifted,
        "drifted_expected_1k": features // 10,
    }


def peak_rss_kb() -> int:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child would
    report its parent's (Evidently-sized) peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def write_markdown(path: Path, r: dict[str, Any], machine: dict[str, Any]) -> None:
    def fmt(v: Any, digits: int = 3) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:,.{digits}g}" if abs(v) < 1e6 else f"{v:,.0f}"
        return str(v)

    ev = r.get("evidently_20x1M_s")
    rows = [
        ("Vigil full drift report, raw window → report (median)", fmt(r["vigil_drift_20x1M_ms"]), "ms", "1×"),
        ("  of which: window profile (one pass over the data)", fmt(r["vigil_window_profile_20x1M_ms"]), "ms", ""),
        ("  same report, fastest of the repeats", fmt(r.get("vigil_drift_20x1M_min_ms")), "ms", ""),
        ("  floor: `np.sum` over the same array (one read, median)", fmt(r.get("read_floor_ms")), "ms", ""),
        ("Vigil report from two stored profiles (median)", fmt(r["vigil_drift_from_profiles_20x1M_ms"]), "ms", ""),
        ("Vigil reference profile (trainer, once)", fmt(r["vigil_reference_profile_20x1M_ms"]), "ms", ""),
        ("scipy `ks_2samp` × 20", fmt(r["scipy_ks_20x1M_s"]), "s", f"{fmt(r['speedup_vs_scipy_ks'])}× slower"),
        ("scipy `wasserstein_distance` × 20", fmt(r["scipy_w1_20x1M_s"]), "s", ""),
        ("numpy decile-histogram PSI × 20", fmt(r["numpy_psi_20x1M_s"]), "s", ""),
        (
            "Evidently `DataDriftPreset`",
            fmt(ev) if ev else f"not run: {r.get('evidently_skipped_reason', '')}",
            "s" if ev else "",
            f"{fmt(r['speedup_vs_evidently'])}× slower" if ev else "",
        ),
    ]
    lines = [
        "# Drift benchmark",
        "",
        f"Generated by `tests/bench/bench_drift.py{' --quick' if r.get('quick') else ''}` — all numbers from one run.",
        "",
        "## Machine",
        "",
        *(
            [
                f"Note: the machine was shared (1-minute load average {machine['load_avg_1m_at_start']:.1f} on "
                f"{machine['cores']} cores at the start), so absolute times are inflated; baselines ran in the same "
                "conditions.",
                "",
            ]
            if machine["load_avg_1m_at_start"] > 0.5 * (machine["cores"] or 1)
            else []
        ),
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine.items()],
        "",
        f"## 20 features × {r['rows_20']:,} rows (float64), window vs stored reference profile",
        "",
        "| what | time | unit | vs Vigil |",
        "|---|---:|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        f"Load during the timed Vigil repeats (1-minute average, {machine['cores']} cores): "
        f"{fmt(r.get('load_avg_1m_before_timing'), 2)} before, {fmt(r.get('load_avg_1m_after_timing'), 2)} after.",
        "",
        f"Drifted features found: Vigil {r['vigil_drifted_features_20']} of {r['vigil_drifted_expected_20']} "
        f"planted (default rule PSI > 0.2), {r['vigil_drifted_w1_norm_rule_20']} under Evidently's rule (W1/σ > 0.1); "
        f"Evidently {fmt(r.get('evidently_drifted'))}. Max |W1/σ Vigil − Evidently|: "
        f"{fmt(r.get('max_w1_norm_abs_diff_vs_evidently'))}.",
        "",
        "### Agreement with exact references (same run)",
        "",
        "| check | value |",
        "|---|---|",
        f"| max \\|KS − scipy ks_2samp\\| | {r['max_ks_error']:.2e} |",
        f"| max documented KS bound (ks_upper − ks) | {r['max_ks_bound']:.2e} |",
        f"| every exact KS within [ks, ks_upper] | {bool(r['ks_within_bound'])} |",
        f"| max \\|W1 − scipy\\| / σ_ref | {r['max_w1_error_per_sigma']:.2e} |",
        f"| max relative W1 error on the drifted features | {r['max_w1_rel_error_drifted']:.2e} |",
        f"| every W1 within its bound | {bool(r['w1_within_bound'])} |",
        f"| max \\|PSI − numpy PSI on the same buckets\\| | {r['max_psi_abs_error']:.2e} |",
        f"| max \\|JS − scipy jensenshannon on the same buckets\\| | {r['max_js_abs_error']:.2e} |",
        f"| max relative χ² error vs scipy chi2_contingency on the same buckets | {r['max_chi2_rel_error']:.2e} |",
        "",
        f"## {r['features_1k']:,} features × {r['rows_1k']:,} rows, chunked ({r['chunk_rows_1k']:,} rows per chunk)",
        "",
        "| what | value |",
        "|---|---:|",
        f"| Vigil window profile + report | {r['vigil_1kx10M_s']:.1f} s |",
        f"| rows/s | {r['rows_per_s_1kx10M']:,.0f} |",
        f"| values/s | {r['values_per_s_1kx10M']:,.0f} |",
        f"| peak RSS (whole child process) | {r['peak_rss_mb_1kx10M']:,.0f} MB |",
        f"| reference profile ({r['reference_rows_1k']:,} rows) | {r['vigil_reference_1k_s']:.1f} s |",
        f"| synthetic data generation (excluded above) | {r['data_generation_1kx10M_s']:.1f} s |",
        f"| drifted features found / planted | {r['drifted_features_1k']} / {r['drifted_expected_1k']} |",
        "",
        "Evidently is not run on this case: it materialises both frames in pandas and, per its own issue tracker, runs",
        "out of memory at this size.",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes for iterating (not the published numbers)")
    ap.add_argument("--out-dir", type=Path, default=None, help="default: docs/benchmarks (full) or /tmp/vigil-bench")
    ap.add_argument("--no-evidently", action="store_true", help="skip the Evidently baseline")
    ap.add_argument(
        "--big-child", nargs=4, type=int, metavar=("ROWS", "FEATURES", "CHUNK", "REF_ROWS"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()

    if args.big_child:
        print(json.dumps(case_big(*args.big_child)))
        return

    out_dir = args.out_dir or (Path("/tmp/vigil-bench") if args.quick else REPO / "docs" / "benchmarks")
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    rows, repeats = (100_000, 7) if args.quick else (1_000_000, 15)
    big = (200_000, 1000, 20_000, 100_000) if args.quick else (10_000_000, 1000, 20_000, 1_000_000)

    results: dict[str, Any] = {"quick": int(args.quick)}
    print(f"20 × {rows:,} ...", flush=True)
    results.update(case_20(rows, repeats, not args.no_evidently))
    print(json.dumps(results, indent=1), flush=True)
    print(f"{big[1]:,} × {big[0]:,} (child process) ...", flush=True)
    child = subprocess.run(
        [sys.executable, __file__, "--big-child", *map(str, big)], capture_output=True, text=True, check=True
    )
    results.update(json.loads(child.stdout.strip().splitlines()[-1]))
    results.update({f"machine_{k}": v for k, v in machine.items() if isinstance(v, int | float)})

    (out_dir / "drift.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    write_markdown(out_dir / "drift.md", results, machine)
    print(json.dumps(results, indent=1))
    print(f"wrote {out_dir / 'drift.json'} and {out_dir / 'drift.md'}")


if __name__ == "__main__":
    main()
