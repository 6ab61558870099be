"""Score calibration for label-free performance estimation: isotonic (PAV) or Platt, chosen on the reference.

Why: confidence-based performance estimation (:mod:`vigil.kernels.estimation`) reads a served score as the
probability that the label is 1. That only holds if the scores are calibrated, so the trainer fits a map from raw
score to probability on data whose labels it has (the validation/holdout split) and stores it in the reference
profile; the monitor applies it to every served score.

Choice of map: identity, isotonic regression (pool-adjacent-violators) and Platt scaling (logistic on the raw score)
are each *cross-fitted* on the reference (k folds: fit on k − 1, predict the held-out fold), and the one whose
out-of-fold predictions have the lowest expected calibration error (ECE, equal-width bins) is refitted on all of
the reference. So a map is only used when it lowers calibration error on data it was not fitted on; an already
calibrated model keeps the identity.

The isotonic fit matches scikit-learn's ``IsotonicRegression(out_of_bounds="clip")`` (and so NannyML's default CBPE
calibrator): equal scores are pooled first, PAV runs over the unique scores, only the first and last point of each
constant block are kept as knots, and prediction interpolates linearly between knots, clipping outside them.
The map serialises to a small JSON object (:meth:`Calibrator.to_dict`): Platt's ``a, b`` or the isotonic knots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from numba import njit

from vigil.kernels._common import F64Array, as_float_vector, as_label_vector, check_same_length
from vigil.kernels.encoding import decode_array, encode_array

__all__ = [
    "CALIBRATION_KINDS",
    "Calibrator",
    "choose_calibrator",
    "expected_calibration_error",
    "fit_isotonic",
    "fit_platt",
]

CalibrationKind = Literal["identity", "isotonic", "platt"]
CALIBRATION_KINDS: tuple[CalibrationKind, ...] = ("identity", "isotonic", "platt")
#: At most this many isotonic knots are stored (a constant block keeps two); more means a noisy, over-fitted map.
MAX_KNOTS = 4096


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from a served score to P(label = 1); ``apply`` is vectorised (one C pass, no Python loop)."""

    kind: CalibrationKind = "identity"
    knots_x: F64Array = field(default_factory=lambda: np.zeros(0))
    knots_y: F64Array = field(default_factory=lambda: np.zeros(0))
    a: float = 1.0
    b: float = 0.0
    #: Out-of-fold ECE of each candidate when the map was chosen (empty when fitted directly).
    ece: dict[str, float] = field(default_factory=dict)
    #: Isotonic only: for each of a few equal cells per knot (at most ``_CELLS``) spanning the knots, the knot
    #: interval its left edge lies in, and each interval's slope — built once per map, so applying it to a small
    #: batch does not rebuild them, and small enough (int32, ~4 cells a knot) to stay in L1 beside the bins.
    _cells: npt.NDArray[np.int32] = field(init=False, repr=False, compare=False)
    _slopes: F64Array = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        k = int(self.knots_x.size)
        cells = np.zeros(min(_CELLS, max(16, 32 * k)) + 1, dtype=np.int32)
        slopes = np.zeros(max(k - 1, 1))
        if self.kind == "isotonic" and k >= 2:
            kx = np.ascontiguousarray(self.knots_x, dtype=np.float64)
            _cell_starts(kx, cells)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # a subnormal gap: inf, as np.interp
                slopes = np.diff(self.knots_y) / np.diff(kx)  # np.interp's own form: slope · (x − x_j) + y_j
        object.__setattr__(self, "_cells", cells)
        object.__setattr__(self, "_slopes", np.ascontiguousarray(slopes, dtype=np.float64))

    @property
    def code(self) -> int:
        """The map as the jitted kernels take it: 0 identity (clip to [0, 1]), 1 isotonic, 2 Platt."""
        return {"identity": 0, "isotonic": 1, "platt": 2}[self.kind]

    def apply(self, scores: npt.ArrayLike) -> F64Array:
        """Calibrated probabilities for ``scores`` (NaN stays NaN, so it is counted as missing downstream)."""
        s = np.asarray(scores, dtype=np.float64)
        if self.kind == "isotonic":
            out = np.empty(s.shape, dtype=np.float64)
            flat = np.ascontiguousarray(s).reshape(-1)
            _interp_kernel(flat, self.knots_x, self.knots_y, self._cells, self._slopes, out.reshape(-1))
            return out
        if self.kind == "platt":
            with np.errstate(over="ignore"):
                return np.asarray(1.0 / (1.0 + np.exp(-(self.a * s + self.b))), dtype=np.float64)
        return np.clip(s, 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the reference profile."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "isotonic":
            out["x"] = encode_array(self.knots_x)
            out["y"] = encode_array(self.knots_y)
        elif self.kind == "platt":
            out["a"] = float(self.a)
            out["b"] = float(self.b)
        if self.ece:
            out["ece"] = {k: float(v) for k, v in self.ece.items()}
        return out

    @classmethod
    def from_dict(cls, d: Any) -> Calibrator:
        """Parse :meth:`to_dict` output; ``ValueError`` on anything malformed (a profile is outside input)."""
        if not isinstance(d, dict) or d.get("kind") not in CALIBRATION_KINDS:
            raise ValueError("calibration: expected an object with kind identity, isotonic or platt")
        kind: CalibrationKind = d["kind"]
        ece_raw = d.get("ece", {})
        if not isinstance(ece_raw, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in ece_raw.values()
        ):
            raise ValueError("calibration: ece must map names to numbers")
        ece = {str(k): float(v) for k, v in ece_raw.items()}
        if kind == "isotonic":
            x = decode_array(d.get("x"), dtype=np.float64, name="calibration.x")
            y = decode_array(d.get("y"), dtype=np.float64, name="calibration.y")
            if x.size == 0 or x.size != y.size or x.size > MAX_KNOTS:
                raise ValueError("calibration: isotonic knots must be 1..4096 (x, y) pairs")
            if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
                raise ValueError("calibration: isotonic knots must be finite")
            if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0) or y[0] < 0 or y[-1] > 1:
                raise ValueError("calibration: isotonic knots must be non-decreasing with y in [0, 1]")
            return cls(kind, x, y, ece=ece)
        if kind == "platt":
            a, b = d.get("a"), d.get("b")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in (a, b)):
                raise ValueError("calibration: platt needs finite numbers a and b")
            if float(a) < 0:  # type: ignore[arg-type]
                raise ValueError("calibration: platt slope a must be >= 0 (a monotone map)")
            return cls(kind, a=float(a), b=float(b), ece=ece)  # type: ignore[arg-type]
        return cls("identity", ece=ece)


_CELLS = 4096


@njit("void(float64[::1], int32[::1])", cache=True, nogil=True)
def _cell_starts(kx, start):  # type: ignore[no-untyped-def]
    """``start[c]`` = the knot interval (``kx[j] ≤ edge < kx[j + 1]``, at most ``k − 2``) of cell ``c``'s left edge,
    for ``start.size − 1`` equal cells spanning the knots."""
    k = kx.size
    cells = start.size - 1
    lo, hi = kx[0], kx[k - 1]
    width = (hi - lo) / cells
    if not width > 0:
        start[:] = 0
        return
    j = 0
    for c in range(cells + 1):
        edge = lo + c * width
        while j < k - 2 and kx[j + 1] <= edge:
            j += 1
        start[c] = j


@njit("void(float64[::1], float64[::1], float64[::1], int32[::1], float64[::1], float64[::1])", cache=True, nogil=True)
def _interp_kernel(s, kx, ky, start, slope, out):  # type: ignore[no-untyped-def]
    """``np.interp(s, kx, ky)`` (clip outside the knots, NaN stays NaN) in one jitted pass, the only per-row work of
    isotonic calibration. A binary search per row is bound by branch mispredictions on unordered scores (~30 ns a
    row here), so a uniform grid of cells (:func:`_cell_starts`, built once per map) says which knot interval a
    score's cell starts in, and a short scan finishes (forward, or back one step when rounding of the cell put it
    one too far): a few predictable steps and no division per row. The same lines are repeated in the estimation
    kernel: a call per row into a shared jitted helper made this pass 8× slower."""
    k = kx.size
    lo, hi = kx[0], kx[k - 1]
    cells = start.size - 1
    per = cells / (hi - lo) if hi > lo else 0.0
    for i in range(s.size):
        x = s[i]
        if x != x:  # NaN
            out[i] = np.nan
        elif x <= lo:
            out[i] = ky[0]
        elif x >= hi:
            out[i] = ky[k - 1]
        else:
            j = start[min(np.int64((x - lo) * per), cells)]
            while kx[j + 1] <= x:  # x < hi = kx[k - 1], so this stops inside the knots
                j += 1
            while kx[j] > x:  # x > lo = kx[0], so this stops at 0 at the latest
                j -= 1
            # np.interp's own guards: a knot answers its value, and a gap too narrow for its slope (subnormal, an
            # infinite slope) falls back to the right knot's form, then to the value of a flat step.
            if x == kx[j]:
                v = ky[j]
            else:
                v = slope[j] * (x - kx[j]) + ky[j]
                if v != v:
                    v = slope[j] * (x - kx[j + 1]) + ky[j + 1]
                    if v != v and ky[j] == ky[j + 1]:
                        v = ky[j]
            out[i] = v


@njit("int64(float64[::1], float64[::1])", cache=True)
def _pav_kernel(y, w):  # type: ignore[no-untyped-def]
    """Pool adjacent violators in place: ``y`` becomes the weighted non-decreasing fit; returns the block count."""
    n = y.size
    start = np.empty(n + 1, dtype=np.int64)  # block k covers [start[k], start[k + 1])
    val = np.empty(n, dtype=np.float64)
    wt = np.empty(n, dtype=np.float64)
    k = 0
    for i in range(n):
        start[k] = i
        val[k] = y[i]
        wt[k] = w[i]
        k += 1
        while k > 1 and val[k - 2] >= val[k - 1]:  # merge ties too: sklearn's blocks are strictly increasing
            tw = wt[k - 2] + wt[k - 1]
            val[k - 2] = (val[k - 2] * wt[k - 2] + val[k - 1] * wt[k - 1]) / tw
            wt[k - 2] = tw
            k -= 1
    start[k] = n
    for j in range(k):
        for i in range(start[j], start[j + 1]):
            y[i] = val[j]
    return k


def _labels_and_scores(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[F64Array, F64Array]:
    s = np.asarray(as_float_vector(scores, name="scores"), dtype=np.float64)
    y = as_label_vector(labels, name="labels")
    check_same_length(scores=s, labels=y)
    ok = np.isfinite(s) & ((y == 0) | (y == 1))
    if not ok.any():
        raise ValueError("calibration needs at least one finite score with a 0/1 label")
    return s[ok], y[ok].astype(np.float64)


def fit_isotonic(scores: npt.ArrayLike, labels: npt.ArrayLike) -> Calibrator:
    """Isotonic calibration (PAV), scikit-learn's knots and interpolation; rows without a 0/1 label are ignored."""
    s, y = _labels_and_scores(scores, labels)
    order = np.argsort(s)  # one sort (numpy's vectorised quicksort); equal scores are pooled below: order is moot
    s, y = s[order], y[order]
    first = np.concatenate(([0], np.flatnonzero(s[1:] != s[:-1]) + 1))
    ux = s[first]
    counts = np.diff(np.append(first, s.size))
    ysum = np.add.reduceat(y, first)
    w = counts.astype(np.float64)
    fit = np.ascontiguousarray(ysum / w)
    _pav_kernel(fit, np.ascontiguousarray(w))
    keep = np.ones(fit.size, dtype=bool)
    if fit.size > 2:
        keep[1:-1] = (fit[1:-1] != fit[:-2]) | (fit[1:-1] != fit[2:])
    kx, ky = ux[keep], np.clip(fit[keep], 0.0, 1.0)
    if kx.size > MAX_KNOTS:  # keep every block's ends evenly thinned; the map stays monotone
        idx = np.unique(np.linspace(0, kx.size - 1, MAX_KNOTS).round().astype(np.int64))
        kx, ky = kx[idx], ky[idx]
    return Calibrator("isotonic", np.ascontiguousarray(kx), np.ascontiguousarray(ky))


def fit_platt(scores: npt.ArrayLike, labels: npt.ArrayLike, *, iterations: int = 50) -> Calibrator:
    """Platt scaling ``p = σ(a·s + b)`` by Newton's method on the log loss (a tiny ridge keeps separable data finite).

    The slope is kept ≥ 0 so the map stays monotone (a model whose scores rank backwards is not "calibrated")."""
    s, y = _labels_and_scores(scores, labels)
    a, b = 1.0, 0.0
    ridge = 1e-6 * s.size
    for _ in range(iterations):
        z = np.clip(a * s + b, -35.0, 35.0)
        p = 1.0 / (1.0 + np.exp(-z))
        r = p - y
        wgt = p * (1.0 - p)
        g = np.array([np.dot(r, s) + ridge * a, r.sum() + ridge * b])
        h = np.array(
            [[np.dot(wgt, s * s) + ridge, np.dot(wgt, s)], [np.dot(wgt, s), wgt.sum() + ridge]], dtype=np.float64
        )
        try:
            step = np.linalg.solve(h, g)
        except np.linalg.LinAlgError:
            break
        a, b = a - float(step[0]), b - float(step[1])
        if abs(step[0]) + abs(step[1]) < 1e-10:
            break
    if a < 0:  # ranks backwards: the best monotone logistic map is a constant at the base rate
        a, b = 0.0, float(np.log(max(y.mean(), 1e-12) / max(1.0 - y.mean(), 1e-12)))
    return Calibrator("platt", a=a, b=b)


def expected_calibration_error(probs: npt.ArrayLike, labels: npt.ArrayLike, n_bins: int = 10) -> float:
    """Σ_b (n_b / N)·|mean p_b − positive rate_b| over ``n_bins`` equal-width bins (the quality kernel's ECE)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.size == 0:
        return float("nan")
    b = np.minimum((np.clip(p, 0.0, 1.0) * n_bins).astype(np.int64), n_bins - 1)
    gap = np.bincount(b, weights=p, minlength=n_bins) - np.bincount(b, weights=y, minlength=n_bins)
    return float(np.abs(gap).sum() / p.size)


def choose_calibrator(
    scores: npt.ArrayLike, labels: npt.ArrayLike, *, folds: int = 5, seed: int = 0, ece_bins: int = 10
) -> Calibrator:
    """Cross-fit identity, isotonic and Platt on the reference; refit the lowest out-of-fold ECE on all of it."""
    s, y = _labels_and_scores(scores, labels)
    if folds < 2:
        raise ValueError("folds must be >= 2")
    ece: dict[str, float] = {"identity": expected_calibration_error(np.clip(s, 0, 1), y, ece_bins)}
    if s.size >= 2 * folds and 0 < y.sum() < y.size:
        fold = np.random.default_rng(seed).permutation(s.size) % folds
        oof = {"isotonic": np.empty_like(s), "platt": np.empty_like(s)}
        for k in range(folds):
            test, train = fold == k, fold != k
            oof["isotonic"][test] = fit_isotonic(s[train], y[train]).apply(s[test])
            oof["platt"][test] = fit_platt(s[train], y[train]).apply(s[test])
        for name, p in oof.items():
            ece[name] = expected_calibration_error(p, y, ece_bins)
    best = min(ece, key=lambda k: (ece[k], k != "identity"))  # ties keep the identity
    if best == "isotonic":
        fitted = fit_isotonic(s, y)
    elif best == "platt":
        fitted = fit_platt(s, y)
    else:
        fitted = Calibrator("identity")
    return Calibrator(fitted.kind, fitted.knots_x, fitted.knots_y, fitted.a, fitted.b, ece=ece)
