"""Label-free performance estimation for binary classifiers (confidence-based, "CBPE"), as a mergeable state.

Why: a prediction's label may arrive months later. If the served scores are calibrated (``p_i`` = P(y_i = 1), see
:mod:`vigil.kernels.calibration`), the *expected* confusion matrix of a window follows from the scores alone, at the
decision threshold ``t`` (ŷ_i = 1 when the raw score ≥ t):

    E[TP] = Σ_{ŷ=1} p_i    E[FP] = Σ_{ŷ=1} (1 − p_i)    E[FN] = Σ_{ŷ=0} p_i    E[TN] = Σ_{ŷ=0} (1 − p_i)

and so estimated accuracy, precision, recall and F1 (ratios of expectations, as NannyML's CBPE computes them).
ROC AUC is estimated as NannyML does: rows ordered by the *raw* score, each contributing ``p_i`` to the true-positive
and ``1 − p_i`` to the false-positive count, and the area under that expected ROC curve. Here the ordering is kept
as a histogram over raw-score bins (bin ``min(floor(s·B), B − 1)``, default ``B = 1000`` like the quality kernel) of
Σp and Σ(1 − p); rows within one bin count as ties (half credit), which differs from the row-wise curve only by the
ordering of rows inside a bin.

Sampling band: the standard deviation of each metric when the labels are drawn as independent Bernoulli(p_i) — the
spread the realised figure would have around the estimate if the calibration were right — by the delta method from
per-class sums of ``p_i(1 − p_i)`` (exact for accuracy and precision, whose denominators are fixed), and for ROC AUC
from a per-bin histogram of ``p_i(1 − p_i)`` and the linearised AUC. It does not include calibration error, which
covariate shift can cause (the method's own bias, measured in the benchmark against realised figures).

Everything the estimate needs is a sum, so a window's state is a few arrays that add under :meth:`merge`: the
monitor folds each batch of served scores in one jitted pass and never keeps rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from vigil.kernels._common import F64Array, I64Array, as_float_vector, as_label_vector, check_same_length
from vigil.kernels.encoding import decode_array, encode_array

__all__ = [
    "BAND_SIGMAS",
    "DEFAULT_ESTIMATION_BINS",
    "ESTIMATED_METRICS",
    "EstimationState",
    "realised_metrics",
]

DEFAULT_ESTIMATION_BINS = 1000
#: The reported band is estimate ± this many sampling standard deviations (NannyML's SAMPLING_ERROR_RANGE is 3).
BAND_SIGMAS = 3.0
ESTIMATED_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")

_SIG = "void({s}[::1], float64[::1], float64, int64[::1], float64[::1], float64[::1], float64[::1], int64[::1])"


@njit([_SIG.format(s="float64"), _SIG.format(s="float32")], cache=True)
def _estimation_update_kernel(s, p, threshold, count, mass, var_mass, sums, ints):  # type: ignore[no-untyped-def]
    """Fold rows: per raw-score bin the count, Σp and Σp(1−p); ``sums = (Σ_{ŷ=1}p, Σ_{ŷ=1}p(1−p), Σ_{ŷ=0}p,
    Σ_{ŷ=0}p(1−p))``, ``ints = (n, predicted positives, missing)``. No fast-math: the range checks decide missing."""
    n_bins = count.size
    sa = 0.0
    va = 0.0
    sb = 0.0
    vb = 0.0
    n = 0
    npp = 0
    miss = 0
    for i in range(s.size):
        x = np.float64(s[i])
        q = p[i]
        if not (x >= 0.0 and x <= 1.0) or not (q >= 0.0 and q <= 1.0):  # NaN fails both comparisons
            miss += 1
            continue
        b = min(np.int64(x * n_bins), n_bins - 1)
        v = q * (1.0 - q)
        count[b] += 1
        mass[b] += q
        var_mass[b] += v
        if x >= threshold:
            sa += q
            va += v
            npp += 1
        else:
            sb += q
            vb += v
        n += 1
    sums[0] += sa
    sums[1] += va
    sums[2] += sb
    sums[3] += vb
    ints[0] += n
    ints[1] += npp
    ints[2] += miss


class EstimationState:
    """Expected confusion matrix and expected ROC histogram of a window, from raw scores and calibrated p."""

    def __init__(self, threshold: float = 0.5, n_bins: int = DEFAULT_ESTIMATION_BINS) -> None:
        if not 1 <= n_bins <= 1 << 20:
            raise ValueError("n_bins must be in [1, 2**20]")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must be in [0, 1]")
        self.threshold = float(threshold)
        self.count: I64Array = np.zeros(n_bins, dtype=np.int64)
        self.mass: F64Array = np.zeros(n_bins, dtype=np.float64)
        self.var_mass: F64Array = np.zeros(n_bins, dtype=np.float64)
        self.sums: F64Array = np.zeros(4, dtype=np.float64)
        self.ints: I64Array = np.zeros(3, dtype=np.int64)

    @property
    def n_bins(self) -> int:
        return int(self.count.size)

    @property
    def n(self) -> int:
        return int(self.ints[0])

    @property
    def missing(self) -> int:
        return int(self.ints[2])

    def update(self, scores: npt.ArrayLike, probs: npt.ArrayLike) -> EstimationState:
        """Fold a batch: raw served ``scores`` in [0, 1] (they decide ŷ and the order) and calibrated ``probs``."""
        s = as_float_vector(scores, name="scores")
        p = np.ascontiguousarray(as_float_vector(probs, name="probs"), dtype=np.float64)
        check_same_length(scores=s, probs=p)
        _estimation_update_kernel(s, p, self.threshold, self.count, self.mass, self.var_mass, self.sums, self.ints)
        return self

    def merge(self, other: EstimationState) -> EstimationState:
        if other.n_bins != self.n_bins or other.threshold != self.threshold:
            raise ValueError("cannot merge estimation states with different bins or thresholds")
        out = EstimationState(self.threshold, self.n_bins)
        for name in ("count", "mass", "var_mass", "sums", "ints"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        return out

    def expected_confusion(self) -> dict[str, float]:
        """E[TP], E[FP], E[FN], E[TN] at the decision threshold."""
        sa, _, sb, _ = (float(v) for v in self.sums)
        n, npp = float(self.ints[0]), float(self.ints[1])
        return {"tp": sa, "fp": npp - sa, "fn": sb, "tn": (n - npp) - sb}

    def estimate(self) -> dict[str, tuple[float, float]]:
        """``{metric: (estimate, sampling std)}`` for accuracy, precision, recall, F1 and ROC AUC (NaN if undefined)."""
        nan = float("nan")
        sa, va, sb, vb = (float(v) for v in self.sums)
        n, npp = float(self.ints[0]), float(self.ints[1])
        out: dict[str, tuple[float, float]] = dict.fromkeys(ESTIMATED_METRICS, (nan, nan))
        if n <= 0:
            return out
        tn = (n - npp) - sb
        out["accuracy"] = ((sa + tn) / n, math.sqrt(va + vb) / n)
        if npp > 0:
            out["precision"] = (sa / npp, math.sqrt(va) / npp)
        pos = sa + sb
        if pos > 0:
            out["recall"] = (sa / pos, math.sqrt(sb * sb * va + sa * sa * vb) / (pos * pos))
        d = npp + pos
        if d > 0:
            da, db = 2.0 * (npp + sb) / (d * d), -2.0 * sa / (d * d)
            out["f1"] = (2.0 * sa / d, math.sqrt(da * da * va + db * db * vb))
        out["roc_auc"] = self._roc_auc()
        return out

    def _roc_auc(self) -> tuple[float, float]:
        pos = self.mass
        neg = self.count - self.mass
        p_total, n_total = float(pos.sum()), float(neg.sum())
        if p_total <= 0 or n_total <= 0:
            return float("nan"), float("nan")
        neg_below = np.cumsum(neg) - neg
        pos_above = pos.sum() - np.cumsum(pos)
        pn = p_total * n_total
        auc = float(np.sum(pos * (neg_below + 0.5 * neg)) / pn)
        # d AUC / d y_i for a row in bin b (y_i moves one unit of mass from negative to positive):
        # (negatives ranked below − positives ranked above, ties halved) / PN − AUC · (N − P) / PN.
        grad = (neg_below + 0.5 * neg - pos_above - 0.5 * pos) / pn - auc * (n_total - p_total) / pn
        return auc, float(math.sqrt(max(float(np.sum(grad * grad * self.var_mass)), 0.0)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "count": encode_array(self.count, shrink_counts=True),
            "mass": encode_array(self.mass),
            "var_mass": encode_array(self.var_mass),
            "sums": encode_array(self.sums),
            "ints": encode_array(self.ints, shrink_counts=True),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EstimationState:
        t = d.get("threshold")
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0.0 <= float(t) <= 1.0:
            raise ValueError("estimation state: bad threshold")
        count = decode_array(d.get("count"), dtype=np.int64, name="count")
        out = cls(float(t), max(count.size, 1))
        out.count = count
        out.mass = decode_array(d.get("mass"), dtype=np.float64, name="mass")
        out.var_mass = decode_array(d.get("var_mass"), dtype=np.float64, name="var_mass")
        out.sums = decode_array(d.get("sums"), dtype=np.float64, name="sums")
        out.ints = decode_array(d.get("ints"), dtype=np.int64, name="ints")
        if not (out.mass.size == out.var_mass.size == count.size and out.sums.size == 4 and out.ints.size == 3):
            raise ValueError("estimation state: inconsistent array lengths")
        return out


def realised_metrics(y_true: npt.ArrayLike, scores: npt.ArrayLike, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision, recall, F1 at ``threshold`` and ROC AUC (average ranks) from labels and raw scores.

    The comparison figure for an estimate, over rows with a 0/1 label and a finite score (NaN when undefined)."""
    y = as_label_vector(y_true, name="y_true")
    s = np.asarray(as_float_vector(scores, name="scores"), dtype=np.float64)
    check_same_length(y_true=y, scores=s)
    ok = ((y == 0) | (y == 1)) & np.isfinite(s)
    y, s = y[ok], s[ok]
    nan = float("nan")
    out = dict.fromkeys(ESTIMATED_METRICS, nan)
    if y.size == 0:
        return out
    yhat = s >= threshold
    pos = y == 1
    tp = float(np.sum(yhat & pos))
    fp = float(np.sum(yhat & ~pos))
    fn = float(np.sum(~yhat & pos))
    out["accuracy"] = float(np.mean(yhat == pos))
    out["precision"] = tp / (tp + fp) if tp + fp else nan
    out["recall"] = tp / (tp + fn) if tp + fn else nan
    out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos and n_neg:
        order = np.argsort(s, kind="mergesort")
        sorted_s = s[order]
        ranks = np.empty(s.size, dtype=np.float64)
        _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
        avg = first + (counts + 1) / 2.0  # 1-based average rank of each tie group
        ranks[order] = np.repeat(avg, counts)
        out["roc_auc"] = float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
    return out
