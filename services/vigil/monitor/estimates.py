"""Label-free performance estimates per window (CBPE): the calibration a version's reference profile carries, the
fold of served scores into the window's estimation state, and the figures that put estimate and realised side by side.

Why here and not in ingest.py: the estimate has its own input (the calibration map, which only some reference
profiles have) and its own output block (``estimated`` in the figures and the ``monitor.window`` event); keeping it
apart keeps the hot path's fold readable. The per-batch work is two vectorised passes over the scores (apply the
map, fold the sums), the same order of cost as the prediction histogram: no Python loop over rows.

Estimate vs realised: the estimate covers every served prediction of the window; the realised figure covers the
labelled ones, computed from their raw scores and served predictions (the quality state and confusion matrix the
monitor keeps anyway). Both are kept: a decision uses the realised figure once enough labels arrived and the
estimate before (decisions.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.kernels.calibration import Calibrator
from vigil.kernels.estimation import BAND_SIGMAS, ESTIMATED_METRICS, EstimationState
from vigil.monitor.state import WindowState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceCalibration:
    """A version's calibration map and decision threshold, from its reference profile's ``calibration`` entry."""

    calibrator: Calibrator
    threshold: float = 0.5


def parse_calibration(body: Any) -> ReferenceCalibration | None:
    """The calibration of a reference profile body, or None (absent — older profiles — or unusable, logged)."""
    if not isinstance(body, dict) or body.get("calibration") is None:
        return None
    raw = body["calibration"]
    try:
        cal = Calibrator.from_dict(raw)
        t = raw.get("threshold", 0.5)
        if not isinstance(t, int | float) or isinstance(t, bool) or not 0.0 <= float(t) <= 1.0:
            raise ValueError("calibration: threshold must be a number in [0, 1]")
    except (ValueError, TypeError, KeyError) as exc:
        log.error("unusable calibration in reference profile", extra={"error": repr(exc)})
        return None
    return ReferenceCalibration(cal, float(t))


def fold_estimate(st: WindowState, scores: npt.NDArray[np.float64], cal: ReferenceCalibration | None) -> None:
    """Fold served scores (P(y = 1) as served, NaN = none) into the window's estimation state."""
    if cal is None or scores.size == 0:
        return
    if st.estimation is None or st.estimation.threshold != cal.threshold:
        if st.estimation is not None and st.estimation.n:
            return  # a window keeps the threshold it started with (a profile does not change under a version)
        st.estimation = EstimationState(cal.threshold)
    st.estimation.update(scores, cal.calibrator.apply(scores))


def _f(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def realised_figures(st: WindowState) -> dict[str, float]:
    """Realised accuracy, precision, recall, F1 (served predictions vs labels) and ROC AUC (raw scores)."""
    out: dict[str, float] = {}
    cm = st.confusion.counts.astype(np.float64)  # [true, predicted]
    n = cm.sum()
    if n > 0 and cm.shape == (2, 2):
        tp, fp, fn = cm[1, 1], cm[0, 1], cm[1, 0]
        out["accuracy"] = float((tp + cm[0, 0]) / n)
        if tp + fp > 0:
            out["precision"] = float(tp / (tp + fp))
        if tp + fn > 0:
            out["recall"] = float(tp / (tp + fn))
        if tp + fp + fn > 0:
            out["f1"] = float(2 * tp / (2 * tp + fp + fn))
    if st.quality is not None and st.quality.count:
        auc = st.quality.roc_auc()
        if math.isfinite(auc):
            out["roc_auc"] = float(auc)
    return out


def estimated_figures(st: WindowState) -> dict[str, Any] | None:
    """The ``estimated`` block of a window's figures: per metric the estimate, its sampling std, the ±3σ band
    (clipped to [0, 1]) and the realised figure once labels arrived (else None)."""
    est = st.estimation
    if est is None or est.n == 0:
        return None
    realised = realised_figures(st)
    metrics: dict[str, dict[str, float | None]] = {}
    for name, (value, std) in est.estimate().items():
        if not math.isfinite(value):
            continue
        sd = std if math.isfinite(std) else 0.0
        metrics[name] = {
            "value": value,
            "std": sd,
            "lower": max(0.0, value - BAND_SIGMAS * sd),
            "upper": min(1.0, value + BAND_SIGMAS * sd),
            "realised": _f(realised[name]) if name in realised else None,
        }
    labelled = int(st.confusion.counts.sum())
    return {"count": est.n, "threshold": est.threshold, "labelled": labelled, "metrics": metrics}


__all__ = [
    "ESTIMATED_METRICS",
    "ReferenceCalibration",
    "estimated_figures",
    "fold_estimate",
    "parse_calibration",
    "realised_figures",
]
