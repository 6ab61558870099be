"""CBPE benchmark: Vigil's label-free performance estimation vs NannyML's CBPE on the same data, in one run.

    .venv/bin/python tests/bench/bench_monitoring_cbpe.py           # writes docs/benchmarks/monitoring.{json,md}
    .venv/bin/python tests/bench/bench_monitoring_cbpe.py --quick   # smaller, writes to /tmp/vigil-bench

Data: the patient-risk generator (:mod:`vigil.datasets.patient_risk`). A histogram gradient-boosting classifier
with balanced class weights (so its scores need calibration) is trained on 20,000 unshifted rows; the reference is
20,000 further unshifted rows with labels and the model's scores;
the analysis set is 500,000 rows whose covariate shift ramps from ``drift = 0`` to ``drift = 1.2`` in ten equal
segments (older, heavier, higher glucose; the label model itself does not change, so calibrated scores stay right
and CBPE's assumption holds). Decision threshold 0.5. Chunks of 1,000 / 10,000 / 100,000 rows.

Same inputs, same calibration: NannyML's CBPE decides on the reference whether isotonic calibration helps
(``needs_calibration``); Vigil is then given the same map (isotonic fitted on the whole reference, or none), so the
difference measures the estimators, not the calibrators. Vigil's own cross-fitted choice
(:func:`~vigil.kernels.calibration.choose_calibrator`) is reported beside it.

Keys written (read-modify-write: only ``cbpe_*`` keys of docs/benchmarks/monitoring.json and the CBPE section of
monitoring.md are touched; other benchmarks own the rest):
- ``cbpe_abs_diff_vs_nannyml_<metric>``: largest |Vigil − NannyML| over every chunk of every size (goal ≤ 0.005 for
  accuracy and ROC AUC); ``cbpe_abs_diff_vs_nannyml`` the larger of those two.
- ``cbpe_abs_error_vs_realised_<tool>_<metric>_c<size>``: mean |estimate − realised| over the chunks (realised from
  the labels and raw scores); the method's own error, for both tools.
- ``cbpe_band_coverage_<metric>_c<size>``: share of chunks whose realised figure lies in Vigil's ±3σ band.
- ``cbpe_vigil_seconds_c<size>`` / ``cbpe_nannyml_seconds_c<size>``: median wall time of fit + estimate over all
  chunks (Vigil: isotonic fit on the reference, then ``EstimationState.chunks`` — calibrate each analysis score and
  fold it into its chunk's state in one pass — and each chunk's estimate; NannyML: ``CBPE.fit`` on the reference +
  ``estimate`` on the analysis frame without labels, for the same five metrics); ``cbpe_speedup_vs_nannyml`` the
  smallest ratio over the sizes (goal ≥ 100×); ``cbpe_*_estimate_seconds_c<size>`` and
  ``cbpe_speedup_estimate_only_c<size>`` the same without the fit. Model scoring and data generation are outside
  every timing.

Not a test: pytest does not collect it, and timings are never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from monitoring_results import median_seconds, merge_results, replace_section

from vigil.datasets.patient_risk import generate
from vigil.kernels.calibration import Calibrator, choose_calibrator, fit_isotonic
from vigil.kernels.estimation import ESTIMATED_METRICS, EstimationState, realised_metrics

REPO = Path(__file__).resolve().parents[2]
THRESHOLD = 0.5
SIZES = (1_000, 10_000, 100_000)
HEADLINE = ("accuracy", "roc_auc")
NML_METRICS = {"accuracy": "accuracy", "precision": "precision", "recall": "recall", "f1": "f1", "roc_auc": "roc_auc"}
MD_START, MD_END = "<!-- cbpe:start -->", "<!-- cbpe:end -->"


def make_data(analysis_rows: int) -> dict[str, np.ndarray]:
    """Train on unshifted rows; score a labelled reference and a covariate-shifted analysis set."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    x_train, y_train = generate(20_000, seed=11)
    x_ref, y_ref = generate(20_000, seed=12)
    seg = analysis_rows // 10
    parts = [generate(seg, seed=100 + k, drift=1.2 * k / 9) for k in range(10)]
    x_an = np.vstack([p[0] for p in parts])
    y_an = np.concatenate([p[1] for p in parts])
    # class_weight="balanced" (common for rare adverse events) makes the scores over-confident about positives:
    # calibration is needed, so the comparison exercises it
    model = HistGradientBoostingClassifier(max_iter=150, class_weight="balanced", random_state=0)
    model.fit(x_train, y_train)
    return {
        "s_ref": model.predict_proba(x_ref)[:, 1],
        "y_ref": y_ref,
        "s_an": model.predict_proba(x_an)[:, 1],
        "y_an": y_an,
    }


def vigil_estimate(cal: Calibrator, s_an: np.ndarray, size: int) -> list[dict[str, tuple[float, float]]]:
    """Calibrate every analysis score and fold it into its chunk's state in one pass, then each chunk's estimate
    (the same figures as ``cal.apply`` + one ``EstimationState.update`` per chunk; the unit tests check that)."""
    return [state.estimate() for state in EstimationState.chunks(s_an, cal, size, THRESHOLD)]


def run_vigil(s_ref: np.ndarray, y_ref: np.ndarray, s_an: np.ndarray, size: int, calibrate: bool) -> Any:
    cal = fit_isotonic(s_ref, y_ref) if calibrate else Calibrator("identity")
    return vigil_estimate(cal, s_an, size)


def nml_frames(d: dict[str, np.ndarray]) -> tuple[Any, Any]:
    import pandas as pd

    ref = pd.DataFrame({"p": d["s_ref"], "yhat": (d["s_ref"] >= THRESHOLD).astype(int), "y": d["y_ref"]})
    an = pd.DataFrame({"p": d["s_an"], "yhat": (d["s_an"] >= THRESHOLD).astype(int)})
    return ref, an


def run_nannyml(ref: Any, an: Any, size: int) -> tuple[Any, Any]:
    import nannyml as nml

    cbpe = nml.CBPE(
        y_pred_proba="p",
        y_pred="yhat",
        y_true="y",
        problem_type="classification_binary",
        metrics=list(NML_METRICS.values()),
        chunk_size=size,
    )
    cbpe.fit(ref)
    return cbpe, cbpe.estimate(an)


def nml_values(result: Any) -> dict[str, np.ndarray]:
    df = result.filter(period="analysis").to_df()
    return {m: df[(col, "value")].to_numpy(dtype=float) for m, col in NML_METRICS.items()}


def run(analysis_rows: int, vigil_repeats: int, nml_repeats: int) -> dict[str, Any]:
    d = make_data(analysis_rows)
    ref, an = nml_frames(d)
    out: dict[str, Any] = {}
    diffs: dict[str, float] = dict.fromkeys(ESTIMATED_METRICS, 0.0)
    speedups = []
    own = choose_calibrator(d["s_ref"], d["y_ref"])
    out["cbpe_vigil_chosen_calibration_isotonic"] = float(own.kind == "isotonic")
    out["cbpe_vigil_chosen_calibration_platt"] = float(own.kind == "platt")
    for kind, ece in own.ece.items():
        out[f"cbpe_reference_oof_ece_{kind}"] = round(ece, 6)
    run_vigil(d["s_ref"], d["y_ref"], d["s_an"][:2000], 1000, True)  # compile/load the kernels outside the timing
    for size in SIZES:
        n_chunks = d["s_an"].size // size
        cbpe, nml_res = run_nannyml(ref, an, size)
        calibrate = bool(cbpe.needs_calibration)
        out["cbpe_nannyml_calibrated"] = float(calibrate)
        nml = nml_values(nml_res)
        ours = run_vigil(d["s_ref"], d["y_ref"], d["s_an"], size, calibrate)
        realised = [
            realised_metrics(d["y_an"][i * size : (i + 1) * size], d["s_an"][i * size : (i + 1) * size], THRESHOLD)
            for i in range(n_chunks)
        ]
        # NannyML may add a last partial chunk; compare the full ones only
        for m in ESTIMATED_METRICS:
            v = np.array([c[m][0] for c in ours[:n_chunks]])
            sd = np.array([c[m][1] for c in ours[:n_chunks]])
            r = np.array([c[m] for c in realised])
            n = nml[m][:n_chunks]
            diffs[m] = max(diffs[m], float(np.nanmax(np.abs(v - n))))
            out[f"cbpe_abs_error_vs_realised_vigil_{m}_c{size}"] = round(float(np.nanmean(np.abs(v - r))), 6)
            out[f"cbpe_abs_error_vs_realised_nannyml_{m}_c{size}"] = round(float(np.nanmean(np.abs(n - r))), 6)
            inside = np.abs(v - r) <= 3 * sd
            out[f"cbpe_band_coverage_{m}_c{size}"] = round(float(np.mean(inside[np.isfinite(r)])), 4)
        t_v = median_seconds(
            lambda s=size, c=calibrate: run_vigil(d["s_ref"], d["y_ref"], d["s_an"], s, c), vigil_repeats
        )
        t_n = median_seconds(lambda s=size: run_nannyml(ref, an, s), nml_repeats)
        cal = fit_isotonic(d["s_ref"], d["y_ref"]) if calibrate else Calibrator("identity")
        e_v = median_seconds(lambda s=size, c=cal: vigil_estimate(c, d["s_an"], s), vigil_repeats)
        e_n = median_seconds(lambda c=cbpe: c.estimate(an), nml_repeats)
        out[f"cbpe_vigil_estimate_seconds_c{size}"] = round(e_v, 5)
        out[f"cbpe_nannyml_estimate_seconds_c{size}"] = round(e_n, 4)
        out[f"cbpe_speedup_estimate_only_c{size}"] = round(e_n / e_v, 1)
        out[f"cbpe_vigil_seconds_c{size}"] = round(t_v, 5)
        out[f"cbpe_nannyml_seconds_c{size}"] = round(t_n, 4)
        out[f"cbpe_speedup_vs_nannyml_c{size}"] = round(t_n / t_v, 1)
        speedups.append(t_n / t_v)
        print(f"chunk {size:,}: vigil {t_v:.4f} s, nannyml {t_n:.3f} s", flush=True)
    for m in ESTIMATED_METRICS:
        out[f"cbpe_abs_diff_vs_nannyml_{m}"] = round(diffs[m], 6)
    out["cbpe_abs_diff_vs_nannyml"] = round(max(diffs[m] for m in HEADLINE), 6)
    out["cbpe_speedup_vs_nannyml"] = round(min(speedups), 1)
    out["cbpe_goal_abs_diff_vs_nannyml"] = 0.005
    out["cbpe_goal_speedup_vs_nannyml"] = 100.0
    out["cbpe_analysis_rows"] = float(d["s_an"].size)
    out["cbpe_reference_rows"] = float(d["s_ref"].size)
    out["cbpe_load_avg_1m"] = round(os.getloadavg()[0], 2)
    out["cbpe_measured_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return out


def monitor_fold_cost(records: int, repeats: int) -> dict[str, float]:
    """The monitor's hot path with and without the estimate: fold ``records`` batches of 2,200 rows × 20 features
    (bench_monitor.py's shape) into a window and serialise its state after each, as a batch transaction does."""
    from types import SimpleNamespace

    from vigil.kernels.profile import DatasetProfile
    from vigil.monitor.estimates import ReferenceCalibration
    from vigil.monitor.ingest import fold_predictions
    from vigil.monitor.state import WindowState

    rng = np.random.default_rng(7)
    names = [f"f{i}" for i in range(20)]
    ref = DatasetProfile.build(np.asfortranarray(rng.normal(size=(50_000, 20))), numeric_names=names)
    rows = 2_200
    x = rng.normal(size=(rows, 20))
    scores = rng.beta(2, 5, rows)
    payload = SimpleNamespace(
        prediction_ids=[f"{i:032x}" for i in range(rows)],
        numeric={n: x[:, j].tolist() for j, n in enumerate(names)},
        categorical={},
        outputs=(scores >= 0.5).astype(float).tolist(),
        scores=scores.tolist(),
        latency_ms=[5.0] * rows,
    )
    s_ref = rng.beta(2, 5, 20_000)
    cal = ReferenceCalibration(fit_isotonic(s_ref, (rng.random(20_000) < s_ref).astype(np.int64)), 0.5)

    def run(c: ReferenceCalibration | None) -> None:
        st = WindowState("d", "m", 1, "stable", 0, 60_000)
        for _ in range(records):
            fold_predictions(st, payload, ref, prediction_bins=10, fairness_attribute=None, calibration=c)
            st.to_bytes()

    run(cal)  # warm the kernels
    off: list[float] = []
    on: list[float] = []
    for _ in range(repeats):  # alternating, so a change of load on the shared machine hits both alike
        off.append(median_seconds(lambda: run(None), 1))
        on.append(median_seconds(lambda: run(cal), 1))
    t_off, t_on = statistics.median(off), statistics.median(on)
    return {
        "cbpe_monitor_fold_rows_per_s_without": round(records * rows / t_off),
        "cbpe_monitor_fold_rows_per_s_with": round(records * rows / t_on),
        "cbpe_monitor_fold_time_ratio": round(t_on / t_off, 3),
    }


def write_markdown(path: Path, r: dict[str, Any]) -> None:
    def row(m: str, size: int) -> str:
        return (
            f"| {m} | {size:,} | {r[f'cbpe_abs_error_vs_realised_vigil_{m}_c{size}']:.4f} | "
            f"{r[f'cbpe_abs_error_vs_realised_nannyml_{m}_c{size}']:.4f} | {r[f'cbpe_band_coverage_{m}_c{size}']:.2f} |"
        )

    lines = [
        MD_START,
        "## Label-free performance estimation (CBPE) vs NannyML",
        "",
        f"`tests/bench/bench_monitoring_cbpe.py`, measured {r['cbpe_measured_at']} (load average "
        f"{r['cbpe_load_avg_1m']} on a shared 2-core machine). Patient-risk data, gradient-boosting model trained on "
        f"20,000 unshifted rows, reference {int(r['cbpe_reference_rows']):,} labelled rows, analysis "
        f"{int(r['cbpe_analysis_rows']):,} rows with covariate shift ramping 0 → 1.2. NannyML 0.13.1 decided "
        f"calibration {'was' if r['cbpe_nannyml_calibrated'] else 'was not'} needed; Vigil used the same "
        "(isotonic on the whole reference, or none).",
        "",
        "| key | measured | goal |",
        "|---|---|---|",
        f"| `cbpe_abs_diff_vs_nannyml` (max over chunks, accuracy & ROC AUC) | {r['cbpe_abs_diff_vs_nannyml']:.6f} "
        f"| ≤ 0.005 ({'met' if r['cbpe_abs_diff_vs_nannyml'] <= 0.005 else 'not met'}) |",
        f"| `cbpe_speedup_vs_nannyml` (smallest over chunk sizes) | {r['cbpe_speedup_vs_nannyml']:.0f}× "
        f"| ≥ 100× ({'met' if r['cbpe_speedup_vs_nannyml'] >= 100 else 'not met'}) |",
        "",
        "Largest |Vigil − NannyML| per metric: "
        + ", ".join(f"{m} {r[f'cbpe_abs_diff_vs_nannyml_{m}']:.2g}" for m in ESTIMATED_METRICS)
        + ".",
        "",
        "| chunk rows | Vigil fit + estimate (s) | NannyML fit + estimate (s) | speed-up "
        "| estimate only: Vigil / NannyML (s) | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for size in SIZES:
        lines.append(
            f"| {size:,} | {r[f'cbpe_vigil_seconds_c{size}']:.4f} | {r[f'cbpe_nannyml_seconds_c{size}']:.3f} | "
            f"{r[f'cbpe_speedup_vs_nannyml_c{size}']:.0f}× | {r[f'cbpe_vigil_estimate_seconds_c{size}']:.4f} / "
            f"{r[f'cbpe_nannyml_estimate_seconds_c{size}']:.3f} | {r[f'cbpe_speedup_estimate_only_c{size}']:.0f}× |"
        )
    lines += [
        "",
        "Timed (median of repeats): Vigil = isotonic fit on the reference + `EstimationState.chunks` (calibrate "
        "each analysis score and fold it into its chunk's state, one pass) + `estimate()` per chunk; NannyML = "
        "`CBPE.fit(reference)` (which also runs its cross-validated `needs_calibration` check and reference-chunk "
        "thresholds) + `estimate(analysis)` without labels, same five metrics. Estimate only: the fitted "
        "map/estimator applied to the analysis set (Vigil: `EstimationState.chunks` + `estimate()` per chunk; "
        "NannyML: `estimate`). Scoring the model and generating data are outside both.",
        "",
        "Mean |estimate − realised| over the chunks (the method's own error; realised from labels and raw scores), "
        "and the share of chunks whose realised figure lies inside Vigil's ±3σ Bernoulli band:",
        "",
        "| metric | chunk rows | Vigil | NannyML | band coverage |",
        "|---|---|---|---|---|",
    ]
    lines += [row(m, size) for m in ESTIMATED_METRICS for size in SIZES]
    ece = {k[len("cbpe_reference_oof_ece_") :]: v for k, v in r.items() if k.startswith("cbpe_reference_oof_ece_")}
    lines += [
        "",
        "Vigil's own cross-fitted choice on this reference (out-of-fold ECE): "
        + ", ".join(f"{k} {v:.4f}" for k, v in sorted(ece.items()))
        + ". The band covers label sampling only; calibration error under shift is the gap the coverage shows.",
        "",
        f"The monitor's hot path (fold 2,200-row × 20-feature batches into a window and serialise its state after "
        f"each, in one process): {r['cbpe_monitor_fold_rows_per_s_without']:,.0f} rows/s without the estimate, "
        f"{r['cbpe_monitor_fold_rows_per_s_with']:,.0f} with it (time ratio {r['cbpe_monitor_fold_time_ratio']:.2f}; "
        "medians). The end-to-end monitor benchmark (`make bench-monitor`) was not re-run with estimates on.",
        MD_END,
    ]
    replace_section(path, "\n".join(lines) + "\n", MD_START, MD_END)


def main() -> None:
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # before nannyml is imported: no network analytics
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100k analysis rows, one repeat (not the published numbers)")
    ap.add_argument("--out-dir", type=Path, default=None, help="default: docs/benchmarks (full) or /tmp/vigil-bench")
    args = ap.parse_args()
    out_dir = args.out_dir or (Path("/tmp/vigil-bench") if args.quick else REPO / "docs" / "benchmarks")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, v_rep, n_rep = (100_000, 3, 1) if args.quick else (500_000, 15, 3)
    results = run(rows, v_rep, n_rep)
    results.update(monitor_fold_cost(60 if args.quick else 100, 3 if args.quick else 11))
    results["cbpe_quick"] = float(args.quick)
    json_path = out_dir / "monitoring.json"
    merge_results(json_path, results, ("cbpe_",))
    write_markdown(out_dir / "monitoring.md", results)
    print(json.dumps(results, indent=1))
    print(f"wrote {json_path} and {out_dir / 'monitoring.md'}")


if __name__ == "__main__":
    main()
