"""Drift-alarm benchmark: calibrated per-feature alarms, multivariate drift and OOD shares, vs NannyML, in one run.

    .venv/bin/python tests/bench/bench_monitoring_drift.py           # writes docs/benchmarks/monitoring.{json,md}
    .venv/bin/python tests/bench/bench_monitoring_drift.py --quick   # fewer windows/rows, writes to /tmp/vigil-bench

Cases
- **Alarm rates** (issue #21 item 3): 20 numeric features (16 standard normal, 3 lognormal, 1 Poisson), a 20,000-row
  reference profile, windows of 30 / 50 / 200 / 1,000 rows. ``false_alarm_rate_n<size>``: share of clean windows
  (drawn from the reference distribution) in which any feature is flagged under ``DriftThresholds()`` (PSI > 0.2 and
  Holm-adjusted KS p ≤ 0.01); goal ≤ 0.01 each. ``detection_rate_n<size>``: share of windows with a 0.5σ mean shift
  in 3 of the 20 features in which any feature is flagged. Beside them, the same rates under the effect-size-only
  rule (``DriftThresholds(alpha=None)``, the library default before #21) and for the PCA reconstruction band.
- **Butterfly** (item 2): NannyML's example, 20 periods of 2,016 rows, the last five rotated 90° (a correlation
  flip). ``butterfly_detected`` = 1 when Vigil's PCA band flags all five drifted chunks and none of the five clean
  ones, and no per-feature verdict fires on any chunk. NannyML's DataReconstructionDriftCalculator runs on the same
  chunks; ``pca_drift_abs_diff_vs_nannyml`` is the largest difference of the chunk errors (same method: standardise,
  PCA keeping 65 % of variance, mean Euclidean reconstruction error).
- **Speed** (item 2): 20 correlated features, 100,000 reference rows, 1,000,000 analysis rows in 10,000-row chunks.
  Vigil: ``fit_pca_reference`` + ``chunk_states`` (one ``ReconstructionState`` per chunk, one pass) + each chunk's
  band; NannyML: ``fit`` + ``calculate``. Both are called once untimed first (NannyML's first call spends seconds
  importing). ``pca_drift_speedup_vs_nannyml`` = NannyML median / Vigil median (goal ≥ 100×). Also the domain
  classifier's time per closed window and the OOD scoring rate.

Keys written (read-modify-write: only the keys listed in ``OWN_PREFIXES`` of docs/benchmarks/monitoring.json and the
drift section of monitoring.md; the CBPE script owns the ``cbpe_*`` keys and its section).

Not a test: pytest does not collect it, and timings are never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from monitoring_results import median_seconds, merge_results, replace_section
from scipy.spatial.transform import Rotation

from vigil.kernels.multivariate import ReconstructionState, domain_classifier_auroc, fit_pca_reference
from vigil.kernels.ood import OODState, fit_ood
from vigil.kernels.profile import DatasetProfile
from vigil.kernels.report import DriftThresholds, drift_report

REPO = Path(__file__).resolve().parents[2]
SIZES = (30, 50, 200, 1000)
OWN_PREFIXES = ("false_alarm_rate_", "detection_rate_", "butterfly_", "pca_drift_", "pca_", "ood_", "drift_bench_")
MD_START, MD_END = "<!-- drift-alarms:start -->", "<!-- drift-alarms:end -->"
DPP = 7 * 24 * 12  # NannyML's butterfly: rows per period


def draw(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """The alarm-rate features; ``shift`` moves features 0–2 (standard normals) by that many σ."""
    x = np.empty((n, 20), order="F")
    x[:, :16] = rng.normal(size=(n, 16))
    x[:, 16:19] = rng.lognormal(0, 0.7, size=(n, 3))
    x[:, 19] = rng.poisson(3, size=n)
    x[:, :3] += shift
    return x


def alarm_rates(windows: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    ref_rows = draw(rng, 20_000)
    ref = DatasetProfile.build(ref_rows)
    pca = fit_pca_reference(ref_rows)
    calibrated, effect_only = DriftThresholds(), DriftThresholds(alpha=None)
    out: dict[str, float] = {}
    for n in SIZES:
        counts = dict.fromkeys(("fa", "fa_old", "fa_feat_old", "fa_pca", "det", "det_old", "det_pca", "det_right"), 0)
        for _ in range(windows):
            clean = draw(rng, n)
            w = ref.window(clean)
            counts["fa"] += drift_report(ref, w, calibrated).n_drifted > 0
            old = drift_report(ref, w, effect_only)
            counts["fa_old"] += old.n_drifted > 0
            counts["fa_feat_old"] += old.n_drifted
            counts["fa_pca"] += bool(ReconstructionState().update(pca, clean).judge(pca)["drifted"])
            shifted = draw(rng, n, 0.5)
            w = ref.window(shifted)
            rep = drift_report(ref, w, calibrated)
            counts["det"] += rep.n_drifted > 0
            counts["det_right"] += bool(rep.numeric_drifted[:3].any() and not rep.numeric_drifted[3:].any())
            counts["det_old"] += drift_report(ref, w, effect_only).n_drifted > 0
            counts["det_pca"] += bool(ReconstructionState().update(pca, shifted).judge(pca)["drifted"])
        out[f"false_alarm_rate_n{n}"] = counts["fa"] / windows
        out[f"detection_rate_n{n}"] = counts["det"] / windows
        out[f"detection_rate_only_shifted_features_n{n}"] = counts["det_right"] / windows
        out[f"false_alarm_rate_effect_only_n{n}"] = counts["fa_old"] / windows
        out[f"false_alarm_rate_effect_only_per_feature_n{n}"] = counts["fa_feat_old"] / (20 * windows)
        out[f"detection_rate_effect_only_n{n}"] = counts["det_old"] / windows
        out[f"pca_false_alarm_rate_n{n}"] = counts["fa_pca"] / windows
        out[f"pca_detection_rate_n{n}"] = counts["det_pca"] / windows
        print(f"n={n}: { ({k: v for k, v in out.items() if k.endswith(f'_n{n}')}) }", flush=True)
    out["drift_bench_alarm_windows"] = float(windows)
    return out


def butterfly_data(seed: int = 23) -> np.ndarray:
    """NannyML's butterfly: 20 periods, the last five rotated 90° about x3 (see test_kernel_multivariate.py)."""
    rng = np.random.default_rng(seed)
    s1 = rng.normal(size=DPP * 20)
    x = np.column_stack(
        [s1 + rng.normal(size=DPP * 20) / 8, s1 + rng.normal(size=DPP * 20) / 8, rng.normal(size=DPP * 20) / 8]
    )
    rotated = (Rotation.from_euler("z", 90, degrees=True).as_matrix() @ x.T).T
    return np.concatenate([x[: 15 * DPP], rotated[15 * DPP :]])


def butterfly() -> dict[str, float]:
    import nannyml as nml
    import pandas as pd

    data = butterfly_data()
    ref_rows, analysis = data[: 10 * DPP], data[10 * DPP :]
    pca = fit_pca_reference(ref_rows)
    profile = DatasetProfile.build(np.asfortranarray(ref_rows))
    vigil_err, vigil_flag, univariate, univariate_old, auroc = [], [], 0, 0, []
    for c in range(10):
        chunk = analysis[c * DPP : (c + 1) * DPP]
        judged = ReconstructionState().update(pca, chunk).judge(pca)
        vigil_err.append(judged["error"])
        vigil_flag.append(bool(judged["drifted"]))
        w = profile.window(np.asfortranarray(chunk))
        univariate += drift_report(profile, w).n_drifted
        univariate_old += drift_report(profile, w, DriftThresholds(alpha=None)).n_drifted
        if c in (0, 5):  # the classifier costs seconds per window: one clean and one rotated chunk
            auroc.append(domain_classifier_auroc(pca.sample, chunk).auroc)
    cols = ["x1", "x2", "x3"]
    calc = nml.DataReconstructionDriftCalculator(column_names=cols, chunk_size=DPP)
    calc.fit(pd.DataFrame(ref_rows, columns=cols))
    res = calc.calculate(pd.DataFrame(analysis, columns=cols)).filter(period="analysis").to_df()
    nml_err = res[("reconstruction_error", "value")].to_numpy(dtype=float)
    nml_alert = res[("reconstruction_error", "alert")].to_numpy(dtype=bool)
    expected = [False] * 5 + [True] * 5
    detected = vigil_flag == expected and univariate == 0
    return {
        "butterfly_detected": float(detected),
        "butterfly_pca_flags": float(sum(vigil_flag)),
        "butterfly_univariate_flags": float(univariate),
        "butterfly_univariate_flags_effect_only": float(univariate_old),
        "butterfly_nannyml_alerts": float(nml_alert.sum()),
        "butterfly_nannyml_alerts_match": float(list(nml_alert) == expected),
        "butterfly_domain_auroc_clean": auroc[0],
        "butterfly_domain_auroc_drifted": auroc[1],
        "pca_drift_abs_diff_vs_nannyml": float(np.max(np.abs(np.array(vigil_err) - nml_err))),
    }


def speed_data(ref_rows: int, analysis_rows: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(0).normal(size=(20, 20)) * np.linspace(0.2, 3, 20)
    ref = rng.normal(size=(ref_rows, 20)) @ mix
    an = rng.normal(size=(analysis_rows, 20)) @ mix
    an[analysis_rows // 2 :, :5] += 0.5  # covariate shift in the second half
    return ref, an


def speed(analysis_rows: int, vigil_repeats: int, nml_repeats: int) -> dict[str, float]:
    import nannyml as nml
    import pandas as pd

    chunk = 10_000
    ref, an = speed_data(100_000, analysis_rows)

    def vigil() -> list[dict[str, Any]]:
        pca = fit_pca_reference(ref)
        return [state.judge(pca) for state in pca.chunk_states(an, chunk)]

    cols = [f"f{i}" for i in range(20)]
    ref_df, an_df = pd.DataFrame(ref, columns=cols), pd.DataFrame(an, columns=cols)

    def nannyml() -> Any:
        calc = nml.DataReconstructionDriftCalculator(column_names=cols, chunk_size=chunk)
        calc.fit(ref_df)
        return calc.calculate(an_df)

    vigil()  # warm both sides (BLAS threads, lazy imports: NannyML's first call imports for seconds)
    nannyml()
    v = median_seconds(vigil, vigil_repeats)
    floor = median_seconds(lambda: an.sum(), vigil_repeats)  # one plain read of the analysis rows: no method beats it
    n = median_seconds(nannyml, nml_repeats)
    pca = fit_pca_reference(ref)
    ood = fit_ood(pca, ref)
    t_ood = median_seconds(lambda: OODState().update(ood, an), vigil_repeats)
    clean = OODState().update(ood, an[: len(an) // 2])
    shifted = OODState().update(ood, an[len(an) // 2 :])
    t_domain = median_seconds(lambda: domain_classifier_auroc(pca.sample, an[-chunk:]), 3)
    return {
        "pca_drift_vigil_seconds": v,
        "pca_drift_nannyml_seconds": n,
        "pca_drift_speedup_vs_nannyml": n / v,
        "pca_drift_read_floor_seconds": floor,
        "pca_drift_rows": float(len(an)),
        "pca_drift_chunk": float(chunk),
        "pca_domain_classifier_seconds_per_window": t_domain,
        "ood_rows_per_second": len(an) / t_ood,
        "ood_reference_share": ood.reference_share,
        "ood_share_clean_half": clean.share,
        "ood_share_shifted_half": shifted.share,
    }


def write_markdown(path: Path, r: dict[str, Any]) -> None:
    def met(ok: bool) -> str:
        return "met" if ok else "not met"

    lines = [
        MD_START,
        "## Calibrated drift alarms, multivariate drift, OOD rows",
        "",
        f"`tests/bench/bench_monitoring_drift.py`, measured {r['drift_bench_measured_at']} (load average "
        f"{r['drift_bench_load_avg_1m']:.1f} at start, {r['drift_bench_load_avg_1m_at_end']:.1f} at the end, on a "
        "shared 2-core machine: timings are only comparable within one run), NannyML 0.13.1.",
        "",
        f"**Alarm rates** over {int(r['drift_bench_alarm_windows']):,} windows per size; 20 numeric features (16 "
        "normal, 3 lognormal, 1 Poisson), 20,000-row reference. A window alarms when any feature is flagged. Clean "
        "windows are drawn from the reference distribution; shifted ones move 3 of the 20 features by 0.5σ.",
        "",
        "| window rows | false alarms (goal ≤ 0.01) | detection | detection, only shifted features flagged | "
        "effect-size-only rule: false alarms / per feature / detection | PCA band: false alarms / detection |",
        "|---|---|---|---|---|---|",
    ]
    for n in SIZES:
        fa = r[f"false_alarm_rate_n{n}"]
        lines.append(
            f"| {n:,} | {fa:.4f} ({met(fa <= 0.01)}) | {r[f'detection_rate_n{n}']:.3f} | "
            f"{r[f'detection_rate_only_shifted_features_n{n}']:.3f} | "
            f"{r[f'false_alarm_rate_effect_only_n{n}']:.3f} / {r[f'false_alarm_rate_effect_only_per_feature_n{n}']:.3f}"
            f" / {r[f'detection_rate_effect_only_n{n}']:.3f} | "
            f"{r[f'pca_false_alarm_rate_n{n}']:.3f} / {r[f'pca_detection_rate_n{n}']:.3f} |"
        )
    lines += [
        "",
        f"**Butterfly** (NannyML's example, 2,016-row chunks, 5 clean + 5 rotated): `butterfly_detected` = "
        f"{int(r['butterfly_detected'])} — Vigil's PCA band flagged {int(r['butterfly_pca_flags'])} chunks (the 5 "
        f"rotated ones expected), per-feature verdicts fired {int(r['butterfly_univariate_flags'])} times "
        f"({int(r['butterfly_univariate_flags_effect_only'])} under the effect-size-only rule); NannyML alerted on "
        f"{int(r['butterfly_nannyml_alerts'])} chunks. Chunk errors agree with NannyML's to "
        f"{r['pca_drift_abs_diff_vs_nannyml']:.1e}. Domain-classifier AUROC: "
        f"{r['butterfly_domain_auroc_clean']:.3f} on the first clean chunk, {r['butterfly_domain_auroc_drifted']:.3f}"
        " on the first rotated one.",
        "",
        f"**PCA drift speed**: 20 correlated features, 100,000 reference rows, {int(r['pca_drift_rows']):,} analysis "
        f"rows in {int(r['pca_drift_chunk']):,}-row chunks, fit + all chunks, median of repeats after one untimed "
        "call of each: Vigil "
        f"{r['pca_drift_vigil_seconds'] * 1000:.1f} ms, NannyML {r['pca_drift_nannyml_seconds']:.2f} s → "
        f"`pca_drift_speedup_vs_nannyml` = {r['pca_drift_speedup_vs_nannyml']:.0f}× (goal ≥ 100×: "
        f"{met(r['pca_drift_speedup_vs_nannyml'] >= 100)}); one plain read of the analysis rows (numpy `sum`) took "
        f"{r['pca_drift_read_floor_seconds'] * 1000:.1f} ms in the same run. Domain classifier per closed window "
        f"(10,000 rows vs the 5,000-row reference sample): {r['pca_domain_classifier_seconds_per_window']:.2f} s.",
        "",
        f"**OOD rows**: {r['ood_rows_per_second'] / 1e6:.1f} M rows/s scored; share flagged on the reference "
        f"{r['ood_reference_share']:.4f}, on the clean half of the analysis data {r['ood_share_clean_half']:.4f}, on "
        f"the shifted half (0.5σ on 5 of 20 features) {r['ood_share_shifted_half']:.4f}.",
        MD_END,
    ]
    replace_section(path, "\n".join(lines) + "\n", MD_START, MD_END)


def main() -> None:
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # before nannyml is imported: no network analytics
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer windows and rows (not the published numbers)")
    ap.add_argument("--out-dir", type=Path, default=None, help="default: docs/benchmarks (full) or /tmp/vigil-bench")
    args = ap.parse_args()
    out_dir = args.out_dir or (Path("/tmp/vigil-bench") if args.quick else REPO / "docs" / "benchmarks")
    out_dir.mkdir(parents=True, exist_ok=True)
    windows, rows, v_rep, n_rep = (200, 200_000, 3, 1) if args.quick else (2000, 1_000_000, 5, 2)
    results: dict[str, Any] = {
        "drift_bench_measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "drift_bench_load_avg_1m": os.getloadavg()[0],
        "drift_bench_quick": float(args.quick),
    }
    results.update(alarm_rates(windows, seed=21))
    results.update(butterfly())
    results.update(speed(rows, v_rep, n_rep))
    results["drift_bench_load_avg_1m_at_end"] = os.getloadavg()[0]
    json_path = out_dir / "monitoring.json"
    merge_results(json_path, results, OWN_PREFIXES)
    write_markdown(out_dir / "monitoring.md", results)
    print(json.dumps(results, indent=1))
    print(f"wrote {json_path} and {out_dir / 'monitoring.md'}")


if __name__ == "__main__":
    main()
