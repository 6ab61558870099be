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
    numeric_drift,
)
from vigil.kernels.profile import DatasetProfile

__all__ = ["DriftReport", "DriftThresholds", "drift_report", "drift_report_from_data"]

NumericMethod = Literal["psi", "js", "hellinger", "ks", "w1_norm", "chi2"]
CategoricalMethod = Literal["psi", "js", "hellinger", "chi2"]


@dataclass(frozen=True)
class DriftThresholds:
    """A feature drifts when its primary statistic exceeds its threshold (χ²: when its p-value is below).

    Defaults: PSI 0.2 (the usual "significant shift"; 0.1 is the usual "watch"), JS distance 0.1 and W1/σ 0.1
    (Evidently's large-sample defaults), Hellinger 0.1 (≈ JS 0.12 for small shifts), KS statistic 0.1 (an effect
    size: at monitoring sample sizes the KS and χ² p-values flag negligible shifts, so they are reported but not the
    default rule). Features with fewer than ``min_rows`` finite window values get no verdict. The dataset drifts
    when at least ``drift_share`` of the judged features drift.
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

    def flag(self, method: str, stats: NumericDrift | CategoricalDrift) -> npt.NDArray[np.bool_]:
        """Drift flags of every feature under ``method`` (NaN statistics never flag)."""
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
    report = DriftReport(num, cat, np.zeros(0, dtype=bool), np.zeros(0, dtype=bool), t)
    num_flags = t.flag(t.numeric_method, num) & report._judged(num) if num is not None else np.zeros(0, dtype=bool)
    cat_flags = t.flag(t.categorical_method, cat) & report._judged(cat) if cat is not None else np.zeros(0, dtype=bool)
    return DriftReport(num, cat, num_flags, cat_flags, t)


def drift_report_from_data(
    reference: DatasetProfile,
    numeric: Table | None = None,
    categorical: list[npt.ArrayLike] | None = None,
    thresholds: DriftThresholds | None = None,
) -> DriftReport:
    """Profile raw window data on the reference's edges (one pass) and report — the benchmark's end-to-end path."""
    return drift_report(reference, reference.window(numeric, categorical), thresholds)
