"""Slow, obvious references for the CBPE kernels (vigil.kernels.estimation / calibration), sharing no code with them.

- ``rowwise_estimated_auc``: NannyML's ``estimate_roc_auc`` written out: rows sorted by raw score, descending, each
  adding p to the expected true positives and 1 − p to the false positives, trapezoid area under that curve.
- ``monte_carlo``: draws the labels as Bernoulli(p_i) many times and computes each realised metric with plain
  numpy, giving the expectation and the spread that the estimate and its band describe.
"""

from __future__ import annotations

import numpy as np


def rowwise_estimated_auc(scores: np.ndarray, probs: np.ndarray) -> float:
    order = np.argsort(scores, kind="mergesort")[::-1]
    p = probs[order].astype(np.float64)
    tps = np.r_[0.0, np.cumsum(p)]
    fps = np.r_[0.0, np.cumsum(1.0 - p)]
    tpr, fpr = tps / tps[-1], fps / fps[-1]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def realised(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Metrics of one labelled sample, by counting (AUC by comparing every positive with every negative)."""
    yhat = scores >= threshold
    pos = y == 1
    tp, fp = np.sum(yhat & pos), np.sum(yhat & ~pos)
    fn = np.sum(~yhat & pos)
    out = {
        "accuracy": float(np.mean(yhat == pos)),
        "precision": tp / (tp + fp) if tp + fp else np.nan,
        "recall": tp / (tp + fn) if tp + fn else np.nan,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan,
    }
    sp, sn = scores[pos], scores[~pos]
    if sp.size and sn.size:
        diff = sp[:, None] - sn[None, :]
        out["roc_auc"] = float((np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / (sp.size * sn.size))
    else:
        out["roc_auc"] = np.nan
    return out


def monte_carlo(
    scores: np.ndarray, probs: np.ndarray, threshold: float, reps: int, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """``{metric: (mean, std)}`` of the realised metric over ``reps`` label draws y_i ~ Bernoulli(p_i)."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(reps):
        y = (rng.random(probs.size) < probs).astype(np.int64)
        for k, v in realised(y, scores, threshold).items():
            draws.setdefault(k, []).append(v)
    return {k: (float(np.nanmean(v)), float(np.nanstd(v))) for k, v in draws.items()}
