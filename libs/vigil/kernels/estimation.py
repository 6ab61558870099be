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

import itertools
import math
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from vigil.kernels._common import (
    F64Array,
    FloatArray,
    I64Array,
    as_float_vector,
    as_label_vector,
    check_same_length,
)
from vigil.kernels._threads import executor, in_worker, n_threads
from vigil.kernels.calibration import Calibrator
from vigil.kernels.encoding import decode_array, encode_array

__all__ = [
    "BAND_SIGMAS",
    "DEFAULT_ESTIMATION_BINS",
    "ESTIMATED_METRICS",
    "EstimationState",
    "realised_metrics",
]

DEFAULT_ESTIMATION_BINS = 1000
_PARALLEL_ROWS = 65_536  # below this a batch runs inline (a thread hand-off costs more than it saves)
#: The reported band is estimate ± this many sampling standard deviations (NannyML's SAMPLING_ERROR_RANGE is 3).
BAND_SIGMAS = 3.0
ESTIMATED_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")

_SIG = (
    "void({s}[::1], float64[::1], int64, float64[::1], float64[::1], int32[::1], float64[::1], float64, float64,"
    " float64, int64[:, ::1], float64[:, ::1], float64[:, ::1], float64[:, ::1], int64[:, ::1], int64)"
)


@njit([_SIG.format(s="float64"), _SIG.format(s="float32")], cache=True, nogil=True)
def _estimation_update_kernel(  # type: ignore[no-untyped-def]
    s, p, mode, kx, ky, cells, slopes, a, b, threshold, count, mass, var_mass, sums, ints, chunk
):
    """Fold rows into per-chunk states (row ``i`` into state ``i // chunk``): per raw-score bin the count, Σp and
    Σp(1−p); ``sums = (Σ_{ŷ=1}p, Σ_{ŷ=1}p(1−p), Σ_{ŷ=0}p, Σ_{ŷ=0}p(1−p))``, ``ints = (n, predicted positives,
    missing)``. ``p`` is the calibrated probability (``mode`` −1) or computed here from the raw score in the same
    pass: 0 identity (clip), 1 isotonic (knots ``kx, ky`` with their cell table), 2 Platt ``σ(a·s + b)``. No
    fast-math: the range checks decide missing."""
    n_bins = count.shape[1]
    k = kx.size
    lo_k, hi_k = kx[0], kx[k - 1]
    cells_n = cells.size - 1
    per = cells_n / (hi_k - lo_k) if hi_k > lo_k else 0.0
    for c in range(count.shape[0]):
        lo = c * chunk
        hi = min(lo + chunk, s.size)
        sa = 0.0
        va = 0.0
        sb = 0.0
        vb = 0.0
        n = 0
        npp = 0
        miss = 0
        for i in range(lo, hi):
            x = np.float64(s[i])
            if mode == -1:
                q = p[i]
            elif mode == 1:  # calibration._interp_kernel's lines, inline (a helper call per row costs 8×)
                if x != x:
                    q = np.nan
                elif x <= lo_k:
                    q = ky[0]
                elif x >= hi_k:
                    q = ky[k - 1]
                else:
                    j = cells[min(np.int64((x - lo_k) * per), cells_n)]
                    while kx[j + 1] <= x:
                        j += 1
                    while kx[j] > x:
                        j -= 1
                    if x == kx[j]:  # np.interp's guards, as in _interp_kernel
                        q = ky[j]
                    else:
                        q = slopes[j] * (x - kx[j]) + ky[j]
                        if q != q:
                            q = slopes[j] * (x - kx[j + 1]) + ky[j + 1]
                            if q != q and ky[j] == ky[j + 1]:
                                q = ky[j]
            elif mode == 2:
                q = 1.0 / (1.0 + np.exp(-(a * x + b)))
            else:
                q = min(max(x, 0.0), 1.0) if x == x else x
            if not (x >= 0.0 and x <= 1.0) or not (q >= 0.0 and q <= 1.0):  # NaN fails both comparisons
                miss += 1
                continue
            bn = min(np.int64(x * n_bins), n_bins - 1)
            v = q * (1.0 - q)
            count[c, bn] += 1
            mass[c, bn] += q
            var_mass[c, bn] += v
            h = 1.0 if x >= threshold else 0.0  # a select, not a branch: raw scores fall either side at random
            sa += h * q
            va += h * v
            sb += q - h * q
            vb += v - h * v
            npp += int(h)
            n += 1
        sums[c, 0] += sa
        sums[c, 1] += va
        sums[c, 2] += sb
        sums[c, 3] += vb
        ints[c, 0] += n
        ints[c, 1] += npp
        ints[c, 2] += miss


_SIG1 = "void({s}[::1], float64[::1], float64, int64[::1], float64[::1], float64[::1], float64[::1], int64[::1])"


@njit([_SIG1.format(s="float64"), _SIG1.format(s="float32")], cache=True, nogil=True)
def _update_one_kernel(s, p, threshold, count, mass, var_mass, sums, ints):  # type: ignore[no-untyped-def]
    """:func:`_estimation_update_kernel` for one state and given probabilities, with half the arguments: the
    monitor folds a batch of a few thousand rows at a time, where numba's per-argument dispatch is a visible part
    of the call (16 arguments cost ~20 µs more per 2,200-row batch than these 8)."""
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
        bn = min(np.int64(x * n_bins), n_bins - 1)
        v = q * (1.0 - q)
        count[bn] += 1
        mass[bn] += q
        var_mass[bn] += v
        h = 1.0 if x >= threshold else 0.0
        sa += h * q
        va += h * v
        sb += q - h * q
        vb += v - h * v
        npp += int(h)
        n += 1
    sums[0] += sa
    sums[1] += va
    sums[2] += sb
    sums[3] += vb
    ints[0] += n
    ints[1] += npp
    ints[2] += miss


@njit("UniTuple(float64, 2)(int64[::1], float64[::1], float64[::1])", cache=True, nogil=True)
def _roc_auc_kernel(count, mass, var_mass):  # type: ignore[no-untyped-def]
    """Area under the expected ROC curve of a histogram (rows of one bin tie: half credit) and its sampling
    standard deviation by the linearised AUC; NaN when either class has no expected mass. One pass for the totals,
    one for the area, one for the gradient (see :meth:`EstimationState._roc_auc`)."""
    nb = count.size
    p_total = 0.0
    n_total = 0.0
    for b in range(nb):
        p_total += mass[b]
        n_total += count[b] - mass[b]
    if not (p_total > 0.0 and n_total > 0.0):
        return np.nan, np.nan
    pn = p_total * n_total
    area = 0.0
    neg_below = 0.0
    for b in range(nb):
        pos = mass[b]
        neg = count[b] - pos
        area += pos * (neg_below + 0.5 * neg)
        neg_below += neg
    auc = area / pn
    shift = auc * (n_total - p_total) / pn
    var = 0.0
    neg_below = 0.0
    pos_above = p_total
    for b in range(nb):
        pos = mass[b]
        neg = count[b] - pos
        pos_above -= pos
        g = (neg_below + 0.5 * neg - pos_above - 0.5 * pos) / pn - shift
        var += g * g * var_mass[b]
        neg_below += neg
    return auc, np.sqrt(var) if var > 0.0 else 0.0


_NO_KNOTS = np.zeros(2)
_STATE_ARRAYS = ("count", "mass", "var_mass", "sums", "ints")
_NO_CELLS = np.zeros(2, dtype=np.int32)


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
        arrays = [np.ascontiguousarray(getattr(self, k)) for k in _STATE_ARRAYS]  # no copy unless a view was strided
        _update_one_kernel(s, p, self.threshold, *arrays)
        self.count, self.mass, self.var_mass, self.sums, self.ints = arrays
        return self

    def update_scores(self, scores: npt.ArrayLike, calibrator: Calibrator) -> EstimationState:
        """Fold a batch of raw served ``scores``, calibrating each with ``calibrator`` in the same pass — the same
        figures as ``update(scores, calibrator.apply(scores))`` without the array of probabilities."""
        s = as_float_vector(scores, name="scores")
        _fold([self], s, None, calibrator, max(s.size, 1))
        return self

    @classmethod
    def chunks(
        cls,
        scores: npt.ArrayLike,
        calibrator: Calibrator,
        chunk: int,
        threshold: float = 0.5,
        n_bins: int = DEFAULT_ESTIMATION_BINS,
    ) -> list[EstimationState]:
        """One state per ``chunk`` consecutive raw scores (the last may be shorter), calibrated in the same pass;
        the same figures as ``EstimationState(threshold, n_bins).update_scores(scores[i : i + chunk], calibrator)``
        for each chunk. Chunks are split across the kernels' worker threads when there are many rows."""
        if chunk < 1:
            raise ValueError("chunk must be positive")
        s = as_float_vector(scores, name="scores")
        n_chunks = -(-s.size // chunk)
        template = cls(threshold, n_bins)  # validates threshold and bins
        arrays = [np.zeros((n_chunks, getattr(template, k).size), getattr(template, k).dtype) for k in _STATE_ARRAYS]
        _fold_stacked(arrays, template.threshold, s, None, calibrator, chunk)
        states = []
        for i in range(n_chunks):
            st = cls.__new__(cls)
            st.threshold = template.threshold
            st.count, st.mass, st.var_mass, st.sums, st.ints = (arr[i] for arr in arrays)
            states.append(st)
        return states

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
        """AUC = Σ_b pos_b·(neg below b + ½ neg_b) / (P·N), and its standard deviation from the gradient: d AUC / d y_i
        for a row in bin b (y_i moves one unit of mass from negative to positive) is (negatives ranked below −
        positives ranked above, ties halved) / PN − AUC · (N − P) / PN. One jitted pass (a dozen numpy calls per
        window cost ~50 µs, more than folding a thousand rows)."""
        auc, sd = _roc_auc_kernel(
            np.ascontiguousarray(self.count, dtype=np.int64),
            np.ascontiguousarray(self.mass, dtype=np.float64),
            np.ascontiguousarray(self.var_mass, dtype=np.float64),
        )
        return float(auc), float(sd)

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


def _fold(
    states: list[EstimationState], s: FloatArray, p: F64Array | None, calibrator: Calibrator | None, chunk: int
) -> None:
    """Fold ``s`` (with ``p``, or ``calibrator`` applied in the pass) into ``states`` — row ``i`` into
    ``states[i // chunk]``. The kernel takes each kind of sum as one ``(states, …)`` array: one state's arrays are
    viewed as such in place; several are stacked and written back. Large inputs are split by chunk across the
    worker threads."""
    if not states:
        return
    first = states[0]
    if any(st.n_bins != first.n_bins or st.threshold != first.threshold for st in states):
        raise ValueError("states must share bins and threshold")
    if len(states) == 1:  # views, no copy: the monitor folds one batch at a time
        arrays = [np.ascontiguousarray(getattr(first, k)).reshape(1, -1) for k in _STATE_ARRAYS]
    else:
        arrays = [np.stack([getattr(st, k) for st in states]) for k in _STATE_ARRAYS]
    _fold_stacked(arrays, first.threshold, s, p, calibrator, chunk)
    for i, st in enumerate(states):
        for k, arr in zip(_STATE_ARRAYS, arrays, strict=True):
            setattr(st, k, arr[i])


def _fold_stacked(
    arrays: list[npt.NDArray[Any]],
    threshold: float,
    s: FloatArray,
    p: F64Array | None,
    calibrator: Calibrator | None,
    chunk: int,
) -> None:
    """The kernel call(s) of :func:`_fold` on the stacked ``(states, …)`` arrays."""
    count, mass, var_mass, sums, ints = arrays
    if calibrator is None:
        mode, kx, ky, cells, slopes, a, b = -1, _NO_KNOTS, _NO_KNOTS, _NO_CELLS, _NO_KNOTS, 0.0, 0.0
        probs = p if p is not None else _NO_KNOTS
    else:
        mode, probs, a, b = calibrator.code, _NO_KNOTS, float(calibrator.a), float(calibrator.b)
        isotonic = calibrator.kind == "isotonic"
        kx = calibrator.knots_x if isotonic else _NO_KNOTS
        ky = calibrator.knots_y if isotonic else _NO_KNOTS
        cells = calibrator._cells if isotonic else _NO_CELLS
        slopes = calibrator._slopes if isotonic else _NO_KNOTS

    def run(lo: int, hi: int) -> None:
        rows = slice(lo * chunk, min(hi * chunk, s.size))
        _estimation_update_kernel(
            s[rows], probs if mode != -1 else probs[rows], mode, kx, ky, cells, slopes, a, b, threshold,
            count[lo:hi], mass[lo:hi], var_mass[lo:hi], sums[lo:hi], ints[lo:hi], chunk,
        )  # fmt: skip

    n = count.shape[0]
    workers = n_threads()
    if n >= 2 and workers > 1 and s.size >= _PARALLEL_ROWS and not in_worker():
        cuts = [(k * n) // workers for k in range(workers + 1)]
        for f in [executor().submit(run, lo, hi) for lo, hi in itertools.pairwise(cuts) if hi > lo]:
            f.result()
    else:
        run(0, n)


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
