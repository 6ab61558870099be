"""A mergeable latency quantile sketch with a relative-error guarantee (the DDSketch construction).

Why this sketch: SLO checks need p50/p90/p99 per deployment × version × window, merged across windows and workers,
without keeping every latency. Logarithmic buckets give every quantile a *relative* error bound (1 % by default),
which is what latency SLOs care about, and merging is adding two fixed-size count arrays — no approximation grows
with merges, unlike sample- or centroid-based sketches.

Bucket ``k`` holds values in ``(γ^(k−1), γ^k]`` with ``γ = (1 + α) / (1 − α)``; its representative
``2γ^k / (γ + 1)`` is within relative error ``α`` of every value in it. Buckets are dense between ``min_value``
and ``max_value``; smaller non-negative values go to a "zero" bucket (absolute error < ``min_value``), larger ones to
the last bucket (estimates are clamped to the exact maximum seen). Negative, NaN and inf values are missing.

Quantile ``q`` is the bucket holding the order statistic of rank ``floor(q (n − 1))`` (numpy's ``method="lower"``),
so ``|estimate − x_rank| ≤ α · x_rank`` for values in range; the top rank and the overflow bucket report the exact
maximum seen.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from vigil.kernels._common import F64Array, I64Array, as_float_vector
from vigil.kernels.encoding import decode_array, encode_array

__all__ = ["LatencySketch"]

_SKETCH_SIG = "void({x}[::1], float64, float64, float64, int64[::1], float64[::1], int64[::1])"


# No fast-math: the bucket of a value must not depend on an approximated logarithm.
@njit([_SKETCH_SIG.format(x="float64"), _SKETCH_SIG.format(x="float32")], cache=True)
def _sketch_update_kernel(values, inv_log_gamma, key_offset, min_value, counts, extremes, ints):  # type: ignore[no-untyped-def]
    """``counts[0]`` is the zero bucket; value ``x ≥ min_value`` goes to ``ceil(log(x)/log γ) − key_offset``,
    clamped to the last bucket. ``extremes = (min, max)`` seen, ``ints = (n, missing)``."""
    last = counts.size - 1
    mn = extremes[0]
    mx = extremes[1]
    n = 0
    for i in range(values.size):
        x = np.float64(values[i])
        if not (x >= 0.0 and x < np.inf):  # NaN, negative and inf are missing
            continue
        n += 1
        mn = min(mn, x)
        mx = max(mx, x)
        if x < min_value:
            counts[0] += 1
        else:
            k = np.int64(np.ceil(np.log(x) * inv_log_gamma - key_offset))
            counts[min(max(k, 1), last)] += 1
    extremes[0] = mn
    extremes[1] = mx
    ints[0] += n
    ints[1] += values.size - n


class LatencySketch:
    """Mergeable quantile sketch of non-negative values with relative accuracy ``relative_accuracy``."""

    def __init__(self, relative_accuracy: float = 0.01, min_value: float = 1e-6, max_value: float = 1e9) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError("relative_accuracy must be in (0, 1)")
        if not 0 < min_value < max_value < math.inf:
            raise ValueError("need 0 < min_value < max_value < inf")
        self.relative_accuracy = float(relative_accuracy)
        self.min_value = float(min_value)
        self.max_value = float(max_value)
        self.gamma = (1 + self.relative_accuracy) / (1 - self.relative_accuracy)
        log_gamma = math.log(self.gamma)
        self._inv_log_gamma = 1.0 / log_gamma
        k_min = math.ceil(math.log(self.min_value) / log_gamma)
        k_max = math.ceil(math.log(self.max_value) / log_gamma)
        # bucket index = key - key_offset, with keys >= k_min landing at index >= 1 (0 is the zero bucket)
        self._key_offset = float(k_min - 1)
        self.counts: I64Array = np.zeros(k_max - k_min + 2, dtype=np.int64)
        self.extremes: F64Array = np.array([np.inf, -np.inf])
        self.ints: I64Array = np.zeros(2, dtype=np.int64)

    @property
    def count(self) -> int:
        return int(self.ints[0])

    @property
    def missing(self) -> int:
        return int(self.ints[1])

    def update(self, values: npt.ArrayLike) -> LatencySketch:
        """Fold a batch of values in place; returns ``self``."""
        v = as_float_vector(values, name="values")
        _sketch_update_kernel(
            v, self._inv_log_gamma, self._key_offset, self.min_value, self.counts, self.extremes, self.ints
        )
        return self

    def _same_params(self, other: LatencySketch) -> bool:
        return (self.relative_accuracy, self.min_value, self.max_value) == (
            other.relative_accuracy,
            other.min_value,
            other.max_value,
        )

    def merge(self, other: LatencySketch) -> LatencySketch:
        if not self._same_params(other):
            raise ValueError("cannot merge sketches with different parameters")
        out = LatencySketch(self.relative_accuracy, self.min_value, self.max_value)
        out.counts = self.counts + other.counts
        out.extremes = np.array([min(self.extremes[0], other.extremes[0]), max(self.extremes[1], other.extremes[1])])
        out.ints = self.ints + other.ints
        return out

    def quantiles(self, qs: npt.ArrayLike) -> F64Array:
        """Estimates of the ``qs`` quantiles (each in [0, 1]); NaN when the sketch is empty."""
        q = np.asarray(qs, dtype=np.float64)
        if np.any(~((q >= 0) & (q <= 1))):
            raise ValueError("quantiles must be in [0, 1]")
        n = self.count
        if n == 0:
            return np.full(q.shape, np.nan)
        rank = np.floor(q * (n - 1))
        idx = np.searchsorted(np.cumsum(self.counts), rank, side="right")
        keys = idx + self._key_offset
        rep = np.where(idx == 0, 0.0, 2.0 * np.power(self.gamma, keys) / (self.gamma + 1.0))
        rep = np.clip(rep, self.extremes[0], self.extremes[1])
        # the extremes are known exactly: the overflow bucket and the top rank report the true maximum
        return np.where((idx >= self.counts.size - 1) | (rank >= n - 1), self.extremes[1], rep)

    def quantile(self, q: float) -> float:
        return float(self.quantiles([q])[0])

    def summary(self) -> dict[str, float]:
        """p50/p90/p99/max and the count — the shape of the monitor's latency figures."""
        p50, p90, p99 = self.quantiles([0.5, 0.9, 0.99])
        return {
            "count": float(self.count),
            "p50": float(p50),
            "p90": float(p90),
            "p99": float(p99),
            "max": float(self.extremes[1]) if self.count else float("nan"),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "relative_accuracy": self.relative_accuracy,
            "min_value": self.min_value,
            "max_value": self.max_value,
            "counts": encode_array(self.counts, shrink_counts=True),
            "extremes": encode_array(self.extremes),
            "ints": encode_array(self.ints, shrink_counts=True),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencySketch:
        out = cls(float(d["relative_accuracy"]), float(d["min_value"]), float(d["max_value"]))
        counts = decode_array(d.get("counts"), dtype=np.int64, name="counts")
        if counts.size != out.counts.size:
            raise ValueError("latency sketch: counts length does not match its parameters")
        out.counts = counts
        out.extremes = decode_array(d.get("extremes"), dtype=np.float64, name="extremes")
        out.ints = decode_array(d.get("ints"), dtype=np.int64, name="ints")
        if out.extremes.size != 2 or out.ints.size != 2:
            raise ValueError("latency sketch: bad array lengths")
        return out
