"""A full drift report over every feature of a window, judged with default thresholds.

Why one call: the monitor (per closed window) and the registry gates (candidate vs champion data) need the same
verdict from the same numbers — every statistic for every feature, one drift flag per feature from a named primary
statistic, and a dataset-level verdict from the share of drifted features. The thresholds travel with the report so
an event can say exactly which rule fired.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from vigil.kernels._common import F64Array, Table, finite_or_none
from vigil.kernels.drift import (
    DEFAULT_COARSE_BINS,
    DEFAULT_EPS,
    CategoricalDrift,
    NumericDrift,
    categorical_drift,
    holm_adjusted,
    numeric_drift,
)
from vigil.kernels.profile import DatasetProfile

__all__ = ["DriftReport", "DriftThresholds", "adjust_pvalues", "drift_report", "drift_report_from_data"]

NumericMethod = Literal["psi", "js", "hellinger", "ks", "w1_norm", "chi2"]
CategoricalMethod = Literal["psi", "js", "hellinger", "chi2"]
Correction = Literal["holm", "bonferroni", "none"]


@dataclass(frozen=True)
class DriftThresholds:
    """A feature drifts when its primary statistic exceeds its threshold (χ²: when its p-value is below) **and** its
    calibrated test rejects "no drift" at family-wise level ``alpha`` across the window's judged features.

    Effect-size defaults: PSI 0.2 (the usual "significant shift"; 0.1 is the usual "watch"), JS distance 0.1 and
    W1/σ 0.1 (Evidently's large-sample defaults), Hellinger 0.1 (≈ JS 0.12 for small shifts), KS statistic 0.1.
    An effect size alone is no verdict on a small window: under no drift E[PSI] ≈ (buckets − 1)(1/n + 1/m), 0.3 at
    30 rows, so PSI > 0.2 flagged 81 % of clean features there. The test (numeric: the two-sample KS p-value;
    categorical: :func:`~vigil.kernels.drift.category_exact_pvalue`), Holm-adjusted over the judged features
    (``correction``), caps the chance that a window of data drawn from the reference flags *any* feature at
    ``alpha`` at every window size; at monitoring sample sizes the test rejects for negligible shifts, and the
    effect size keeps those quiet. ``alpha=None`` restores the effect-size-only rule. Features with fewer than
    ``min_rows`` finite window values get no verdict. The dataset drifts when at least ``drift_share`` of the judged
    features drift (so its false-alarm rate is ≤ ``alpha`` too). Derivation and measurements: docs/kernels.md.
    """

    psi: float = 0.2
    js: float = 0.1
    hellinger: float = 0.1
    ks: float = 0.1
    w1_norm: float = 0.1
    chi2_pvalue: float = 0.05
    numeric_method: NumericMethod = "psi"
    categorical_method: CategoricalMethod = "psi"
    drift_share: float = 0.5
    min_rows: int = 30
    n_coarse: int = DEFAULT_COARSE_BINS
    eps: float = DEFAULT_EPS
    alpha: float | None = 0.01
    correction: Correction = "holm"

    def __post_init__(self) -> None:
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise ValueError("alpha must be in (0, 1) or None")
        if self.correction not in ("holm", "bonferroni", "none"):
            raise ValueError("correction must be holm, bonferroni or none")

    def flag(self, method: str, stats: NumericDrift | CategoricalDrift) -> npt.NDArray[np.bool_]:
        """Effect-size flags of every feature under ``method`` (NaN statistics never flag); the verdict also needs
        the test (:func:`drift_report`)."""
        if method == "chi2":
            return np.asarray(stats.chi2_pvalue < self.chi2_pvalue)
        values: F64Array = getattr(stats, method)
        return np.asarray(values > getattr(self, method))


@dataclass(frozen=True)
class DriftReport:
    """Column-wise drift statistics of all features plus verdicts. Use :meth:`features` for per-feature records."""

    numeric: NumericDrift | None
    categorical: CategoricalDrift | None
    numeric_drifted: npt.NDArray[np.bool_]
    categorical_drifted: npt.NDArray[np.bool_]
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    #: the calibrated tests' p-values after the multiple-testing correction (NaN for features not judged)
    numeric_pvalue_adjusted: F64Array = field(default_factory=lambda: np.zeros(0))
    categorical_pvalue_adjusted: F64Array = field(default_factory=lambda: np.zeros(0))

    @property
    def n_judged(self) -> int:
        """Features with enough window rows to be judged."""
        return int(self._judged(self.numeric).sum() + self._judged(self.categorical).sum())

    @property
    def n_drifted(self) -> int:
        return int(self.numeric_drifted.sum() + self.categorical_drifted.sum())

    @property
    def share_drifted(self) -> float:
        return self.n_drifted / self.n_judged if self.n_judged else 0.0

    @property
    def dataset_drift(self) -> bool:
        return self.n_judged > 0 and self.share_drifted >= self.thresholds.drift_share

    def _judged(self, stats: NumericDrift | CategoricalDrift | None) -> npt.NDArray[np.bool_]:
        if stats is None:
            return np.zeros(0, dtype=bool)
        return np.asarray((stats.n_window >= self.thresholds.min_rows) & (stats.n_reference > 0))

    def features(self) -> dict[str, dict[str, Any]]:
        """Per-feature records shaped like the monitor's ``FeatureDrift`` event record (plus ``drifted``,
        ``kind`` and the statistic/threshold that decided), JSON-safe: non-finite numbers become None."""
        out: dict[str, dict[str, Any]] = {}
        t = self.thresholds
        if self.numeric is not None:
            s = self.numeric
            for i, name in enumerate(s.names):  # loops over features only
                out[name] = {
                    "kind": "numeric",
                    "count": int(s.n_window[i]),
                    "missing": int(s.missing_window[i]),
                    "psi": finite_or_none(s.psi[i]),
                    "ks": finite_or_none(s.ks[i]),
                    "ks_bound": finite_or_none(s.ks_upper[i] - s.ks[i]),
                    "js": finite_or_none(s.js[i]),
                    "w1": finite_or_none(s.w1[i]),
                    "chi2": finite_or_none(s.chi2[i]),
                    "hellinger": finite_or_none(s.hellinger[i]),
                    "p_value": finite_or_none(s.ks_pvalue[i]),
                    "w1_norm": finite_or_none(s.w1_norm[i]),
                    "chi2_pvalue": finite_or_none(s.chi2_pvalue[i]),
                    "method": t.numeric_method,
                    "threshold": getattr(t, "chi2_pvalue" if t.numeric_method == "chi2" else t.numeric_method),
                    "test_pvalue": finite_or_none(s.ks_pvalue[i]),
                    "pvalue_adjusted": _at(self.numeric_pvalue_adjusted, i),
                    "alpha": t.alpha,
                    "drifted": bool(self.numeric_drifted[i]),
                }
        if self.categorical is not None:
            c = self.categorical
            for i, name in enumerate(c.names):
                out[name] = {
                    "kind": "categorical",
                    "count": int(c.n_window[i]),
                    "missing": int(c.missing_window[i]),
                    "psi": finite_or_none(c.psi[i]),
                    "js": finite_or_none(c.js[i]),
                    "chi2": finite_or_none(c.chi2[i]),
                    "hellinger": finite_or_none(c.hellinger[i]),
                    "p_value": finite_or_none(c.chi2_pvalue[i]),
                    "method": t.categorical_method,
                    "threshold": getattr(t, "chi2_pvalue" if t.categorical_method == "chi2" else t.categorical_method),
                    "test_pvalue": finite_or_none(c.exact_pvalue[i]),
                    "pvalue_adjusted": _at(self.categorical_pvalue_adjusted, i),
                    "alpha": t.alpha,
                    "drifted": bool(self.categorical_drifted[i]),
                }
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: verdicts, thresholds and every feature's record."""
        return {
            "dataset_drift": self.dataset_drift,
            "share_drifted": self.share_drifted,
            "n_drifted": self.n_drifted,
            "n_judged": self.n_judged,
            "thresholds": asdict(self.thresholds),
            "features": self.features(),
        }


def drift_report(
    reference: DatasetProfile, window: DatasetProfile, thresholds: DriftThresholds | None = None
) -> DriftReport:
    """Every statistic for every feature of ``window`` against ``reference`` and the verdicts under ``thresholds``.

    Cost is O(features × bins), independent of rows: the monitor keeps window profiles (merging per batch) and
    calls this when a window closes.
    """
    t = thresholds or DriftThresholds()
    if (reference.numeric is None) != (window.numeric is None) or (
        (reference.categorical is None) != (window.categorical is None)
    ):
        raise ValueError("reference and window have different kinds of features")
    num = (
        numeric_drift(reference.numeric, window.numeric, n_coarse=t.n_coarse, eps=t.eps)
        if reference.numeric is not None and window.numeric is not None
        else None
    )
    cat = (
        categorical_drift(reference.categorical, window.categorical, eps=t.eps)
        if reference.categorical is not None and window.categorical is not None
        else None
    )
    empty = np.zeros(0, dtype=bool)
    probe = DriftReport(num, cat, empty, empty, t)
    num_judged, cat_judged = probe._judged(num), probe._judged(cat)
    p_num = np.where(num_judged, num.ks_pvalue, np.nan) if num is not None else np.zeros(0)
    p_cat = np.where(cat_judged, cat.exact_pvalue, np.nan) if cat is not None else np.zeros(0)
    adjusted = adjust_pvalues(np.concatenate([p_num, p_cat]), t.correction)
    adj_num, adj_cat = adjusted[: p_num.size], adjusted[p_num.size :]
    num_flags = t.flag(t.numeric_method, num) & num_judged if num is not None else empty
    cat_flags = t.flag(t.categorical_method, cat) & cat_judged if cat is not None else empty
    if t.alpha is not None:
        with np.errstate(invalid="ignore"):
            num_flags = num_flags & (adj_num <= t.alpha)
            cat_flags = cat_flags & (adj_cat <= t.alpha)
    return DriftReport(num, cat, num_flags, cat_flags, t, adj_num, adj_cat)


def adjust_pvalues(pvalues: F64Array, correction: Correction) -> F64Array:
    """Multiple-testing adjustment over one window's judged features (NaN = not judged, left out of the count)."""
    p = np.where(np.isnan(pvalues), np.nan, np.clip(pvalues, 0.0, 1.0))
    if correction == "holm":
        return holm_adjusted(p)
    if correction == "bonferroni":
        k = int(np.count_nonzero(~np.isnan(p)))
        return np.minimum(1.0, p * k)
    return p


def _at(values: F64Array, i: int) -> float | None:
    return finite_or_none(values[i]) if i < values.size else None


def drift_report_from_data(
    reference: DatasetProfile,
    numeric: Table | None = None,
    categorical: list[npt.ArrayLike] | None = None,
    thresholds: DriftThresholds | None = None,
) -> DriftReport:
    """Profile raw window data on the reference's edges (one pass) and report — the benchmark's end-to-end path."""
    return drift_report(reference, reference.window(numeric, categorical), thresholds)
