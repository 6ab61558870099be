"""Model-quality kernels that stream: confusion matrix, ROC/PR AUC from score histograms, log loss, Brier, ECE,
MAE/RMSE.

Why streaming states instead of ``sklearn.metrics`` calls: labels arrive late and in batches, per window and per
served version; the monitor must fold each batch into a small state and merge states across windows, never keep the
raw predictions. Every state here is a few arrays that add under :meth:`merge` and serialise with ``to_dict``.

Score histograms: a probability ``p`` of a binary classifier lands in bin ``min(floor(p · B), B − 1)`` (default
``B = 1000``). ROC AUC and average precision are computed from the per-bin positive/negative counts; they are
*exact* for scores that are constant within a bin (sklearn on scores rounded down to the bin gives the same number)
and otherwise differ from the raw-score value by at most half the within-bin tie mass,
``Σ_b pos_b · neg_b / (2 · P · N)`` (reported by :meth:`BinaryClassificationState.roc_auc_tie_bound`). Log loss and
Brier are accumulated from the raw scores, so they are exact. Invalid rows (label not 0/1, score NaN or outside
[0, 1]) are counted as missing and skipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from vigil.kernels._common import (
    F64Array,
    I64Array,
    as_float_vector,
    as_label_vector,
    check_same_length,
)
from vigil.kernels.encoding import decode_array, encode_array

__all__ = [
    "DEFAULT_ECE_BINS",
    "DEFAULT_SCORE_BINS",
    "LOG_LOSS_EPS",
    "BinaryClassificationState",
    "ConfusionMatrix",
    "RegressionState",
]

DEFAULT_SCORE_BINS = 1000
DEFAULT_ECE_BINS = 10
#: Probabilities are clipped to [eps, 1 − eps] inside log loss so that a confident mistake costs ~34.5, not inf.
LOG_LOSS_EPS = 1e-15

_BINARY_SIG = "void(int64[::1], {x}[::1], int64[::1], int64[::1], float64[::1], float64[::1], int64[::1])"


# No fast-math in the update kernels: their NaN/range checks decide what is missing (see _common.FASTMATH).
@njit([_BINARY_SIG.format(x="float64"), _BINARY_SIG.format(x="float32")], cache=True)
def _binary_update_kernel(y, s, pos, neg, score_sum, sums, ints):  # type: ignore[no-untyped-def]
    """Fold rows into the histograms; ``sums = (Σ log loss, Σ squared error)``, ``ints = (n, missing)``."""
    n_bins = pos.size
    ll = 0.0
    sq = 0.0
    n = 0
    miss = 0
    for i in range(y.size):
        label = y[i]
        p = np.float64(s[i])
        if not (p >= 0.0 and p <= 1.0) or (label != 0 and label != 1):  # NaN fails both comparisons
            miss += 1
            continue
        b = min(np.int64(p * n_bins), n_bins - 1)
        if label == 1:
            pos[b] += 1
            pc = max(p, LOG_LOSS_EPS)
            ll -= np.log(pc)
        else:
            neg[b] += 1
            pc = min(p, 1.0 - LOG_LOSS_EPS)
            ll -= np.log1p(-pc)
        score_sum[b] += p
        sq += (p - label) * (p - label)
        n += 1
    sums[0] += ll
    sums[1] += sq
    ints[0] += n
    ints[1] += miss


class BinaryClassificationState:
    """Streaming quality of a binary classifier from (label, probability-of-1) pairs."""

    def __init__(self, n_bins: int = DEFAULT_SCORE_BINS) -> None:
        if not 1 <= n_bins <= 1 << 20:
            raise ValueError("n_bins must be in [1, 2**20]")
        self.pos: I64Array = np.zeros(n_bins, dtype=np.int64)
        self.neg: I64Array = np.zeros(n_bins, dtype=np.int64)
        self.score_sum: F64Array = np.zeros(n_bins, dtype=np.float64)
        self.sums: F64Array = np.zeros(2, dtype=np.float64)
        self.ints: I64Array = np.zeros(2, dtype=np.int64)

    @property
    def n_bins(self) -> int:
        return int(self.pos.size)

    @property
    def count(self) -> int:
        return int(self.ints[0])

    @property
    def missing(self) -> int:
        return int(self.ints[1])

    def update(self, y_true: npt.ArrayLike, scores: npt.ArrayLike) -> BinaryClassificationState:
        """Fold a batch in place (labels 0/1; scores = P(y = 1) in [0, 1]) and return ``self``."""
        y = as_label_vector(y_true, name="y_true")
        s = as_float_vector(scores, name="scores")
        check_same_length(y_true=y, scores=s)
        _binary_update_kernel(y, s, self.pos, self.neg, self.score_sum, self.sums, self.ints)
        return self

    def merge(self, other: BinaryClassificationState) -> BinaryClassificationState:
        if other.n_bins != self.n_bins:
            raise ValueError("cannot merge states with different bin counts")
        out = BinaryClassificationState(self.n_bins)
        for name in ("pos", "neg", "score_sum", "sums", "ints"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        return out

    def roc_auc(self) -> float:
        """P(score of a positive > score of a negative) + ½ P(same bin); NaN without both classes."""
        p_total, n_total = self.pos.sum(), self.neg.sum()
        if p_total == 0 or n_total == 0:
            return float("nan")
        neg_below = np.cumsum(self.neg) - self.neg
        return float(np.sum(self.pos * (neg_below + 0.5 * self.neg)) / (float(p_total) * float(n_total)))

    def roc_auc_tie_bound(self) -> float:
        """Largest possible gap between the binned ROC AUC and the raw-score one (within-bin ties)."""
        p_total, n_total = self.pos.sum(), self.neg.sum()
        if p_total == 0 or n_total == 0:
            return float("nan")
        return float(np.sum(self.pos * self.neg.astype(np.float64)) / (2.0 * p_total * n_total))

    def pr_auc(self) -> float:
        """Average precision Σ ΔRecall · Precision over descending bin thresholds (sklearn's definition)."""
        p_total = self.pos.sum()
        if p_total == 0:
            return float("nan")
        tp = np.cumsum(self.pos[::-1])
        fp = np.cumsum(self.neg[::-1])
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        return float(np.sum(self.pos[::-1] / p_total * precision))

    def log_loss(self) -> float:
        return float(self.sums[0] / self.count) if self.count else float("nan")

    def brier(self) -> float:
        return float(self.sums[1] / self.count) if self.count else float("nan")

    def ece(self, n_bins: int = DEFAULT_ECE_BINS) -> float:
        """Expected calibration error over ``n_bins`` equal-width bins (must divide the score-bin count):
        Σ_b (n_b / N) · |mean score_b − positive rate_b|."""
        if n_bins < 1 or self.n_bins % n_bins:
            raise ValueError(f"ECE bins ({n_bins}) must divide the score bins ({self.n_bins})")
        if not self.count:
            return float("nan")
        k = self.n_bins // n_bins
        s = self.score_sum.reshape(n_bins, k).sum(axis=1)
        pos = self.pos.reshape(n_bins, k).sum(axis=1)
        return float(np.abs(s - pos).sum() / self.count)

    def confusion_at(self, threshold: float = 0.5) -> dict[str, int]:
        """TP/FP/TN/FN when predicting 1 for scores in bins at or above ``threshold``'s bin."""
        b = min(int(threshold * self.n_bins), self.n_bins - 1)
        tp, fp = int(self.pos[b:].sum()), int(self.neg[b:].sum())
        return {"tp": tp, "fp": fp, "fn": int(self.pos[:b].sum()), "tn": int(self.neg[:b].sum())}

    def metrics(self, ece_bins: int = DEFAULT_ECE_BINS) -> dict[str, float]:
        return {
            "roc_auc": self.roc_auc(),
            "pr_auc": self.pr_auc(),
            "log_loss": self.log_loss(),
            "brier": self.brier(),
            "ece": self.ece(ece_bins),
            "count": float(self.count),
            "missing": float(self.missing),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "pos": encode_array(self.pos, shrink_counts=True),
            "neg": encode_array(self.neg, shrink_counts=True),
            "score_sum": encode_array(self.score_sum),
            "sums": encode_array(self.sums),
            "ints": encode_array(self.ints, shrink_counts=True),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BinaryClassificationState:
        pos = decode_array(d.get("pos"), dtype=np.int64, name="pos")
        out = cls(max(pos.size, 1))
        out.pos = pos
        out.neg = decode_array(d.get("neg"), dtype=np.int64, name="neg")
        out.score_sum = decode_array(d.get("score_sum"), dtype=np.float64, name="score_sum")
        out.sums = decode_array(d.get("sums"), dtype=np.float64, name="sums")
        out.ints = decode_array(d.get("ints"), dtype=np.int64, name="ints")
        if not (out.neg.size == out.score_sum.size == pos.size and out.sums.size == 2 and out.ints.size == 2):
            raise ValueError("binary classification state: inconsistent array lengths")
        return out


@njit("int64(int64[::1], int64[::1], int64[:,::1])", cache=True)
def _confusion_kernel(y_true, y_pred, cm):  # type: ignore[no-untyped-def]
    k = cm.shape[0]
    bad = 0
    for i in range(y_true.size):
        t = y_true[i]
        p = y_pred[i]
        if t < 0 or t >= k or p < 0 or p >= k:
            bad += 1
        else:
            cm[t, p] += 1
    return bad


class ConfusionMatrix:
    """Streaming multi-class confusion matrix: ``counts[true, predicted]``; labels outside [0, K) are missing."""

    def __init__(self, n_classes: int) -> None:
        if n_classes < 1:
            raise ValueError("n_classes must be >= 1")
        self.counts: I64Array = np.zeros((n_classes, n_classes), dtype=np.int64)
        self.missing = 0

    @property
    def n_classes(self) -> int:
        return int(self.counts.shape[0])

    def update(self, y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> ConfusionMatrix:
        t = as_label_vector(y_true, name="y_true")
        p = as_label_vector(y_pred, name="y_pred")
        check_same_length(y_true=t, y_pred=p)
        self.missing += int(_confusion_kernel(t, p, self.counts))
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if other.n_classes != self.n_classes:
            raise ValueError("cannot merge confusion matrices of different sizes")
        out = ConfusionMatrix(self.n_classes)
        out.counts = self.counts + other.counts
        out.missing = self.missing + other.missing
        return out

    def metrics(self) -> dict[str, float]:
        """Accuracy and macro precision/recall/F1 (classes never seen nor predicted are left out of the macro)."""
        cm = self.counts.astype(np.float64)
        total = cm.sum()
        tp = np.diag(cm)
        pred = cm.sum(axis=0)
        true = cm.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(pred > 0, tp / pred, 0.0)
            recall = np.where(true > 0, tp / true, 0.0)
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        present = (pred + true) > 0
        macro = lambda a: float(a[present].mean()) if present.any() else float("nan")  # noqa: E731
        return {
            "accuracy": float(tp.sum() / total) if total else float("nan"),
            "macro_precision": macro(precision),
            "macro_recall": macro(recall),
            "macro_f1": macro(f1),
            "count": float(total),
            "missing": float(self.missing),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_classes": self.n_classes,
            "counts": encode_array(self.counts, shrink_counts=True),
            "missing": self.missing,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConfusionMatrix:
        k = d.get("n_classes")
        if not isinstance(k, int) or k < 1:
            raise ValueError("confusion matrix: bad n_classes")
        out = cls(k)
        counts = decode_array(d.get("counts"), dtype=np.int64, name="counts")
        if counts.size != k * k:
            raise ValueError("confusion matrix: counts length")
        out.counts = counts.reshape(k, k).copy()
        out.missing = int(d.get("missing", 0))
        return out


_REG_SIG = "void({x}[::1], {x}[::1], float64[::1], int64[::1])"


@njit([_REG_SIG.format(x="float64"), _REG_SIG.format(x="float32")], cache=True)
def _regression_kernel(y, yhat, sums, ints):  # type: ignore[no-untyped-def]
    """``sums = (Σ|e|, Σe², Σe)`` with e = ŷ − y over rows where both are finite; ``ints = (n, missing)``."""
    a = 0.0
    q = 0.0
    e_sum = 0.0
    n = 0
    for i in range(y.size):
        e = np.float64(yhat[i]) - np.float64(y[i])
        if np.isfinite(e):
            a += abs(e)
            q += e * e
            e_sum += e
            n += 1
    sums[0] += a
    sums[1] += q
    sums[2] += e_sum
    ints[0] += n
    ints[1] += y.size - n


class RegressionState:
    """Streaming regression errors: MAE, RMSE and bias (mean of ŷ − y); rows with a non-finite side are missing."""

    def __init__(self) -> None:
        self.sums: F64Array = np.zeros(3, dtype=np.float64)
        self.ints: I64Array = np.zeros(2, dtype=np.int64)

    @property
    def count(self) -> int:
        return int(self.ints[0])

    def update(self, y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> RegressionState:
        y = as_float_vector(y_true, name="y_true")
        yhat = as_float_vector(y_pred, name="y_pred")
        check_same_length(y_true=y, y_pred=yhat)
        dt = np.result_type(y, yhat)
        _regression_kernel(y.astype(dt, copy=False), yhat.astype(dt, copy=False), self.sums, self.ints)
        return self

    def merge(self, other: RegressionState) -> RegressionState:
        out = RegressionState()
        out.sums = self.sums + other.sums
        out.ints = self.ints + other.ints
        return out

    def metrics(self) -> dict[str, float]:
        n = self.count
        if not n:
            nan = float("nan")
            return {"mae": nan, "rmse": nan, "bias": nan, "count": 0.0, "missing": float(self.ints[1])}
        return {
            "mae": float(self.sums[0] / n),
            "rmse": float(np.sqrt(self.sums[1] / n)),
            "bias": float(self.sums[2] / n),
            "count": float(n),
            "missing": float(self.ints[1]),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"sums": encode_array(self.sums), "ints": encode_array(self.ints, shrink_counts=True)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegressionState:
        out = cls()
        out.sums = decode_array(d.get("sums"), dtype=np.float64, name="sums")
        out.ints = decode_array(d.get("ints"), dtype=np.int64, name="ints")
        if out.sums.size != 3 or out.ints.size != 2:
            raise ValueError("regression state: bad array lengths")
        return out
