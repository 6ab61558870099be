"""A window's feature distributions beside its reference's, on display bins both share, and its per-group rates.

Why this exists: the window figures hold statistics (PSI, KS, …), not distributions, so a person cannot see *how* a
feature moved. The window state (state.py) keeps each numeric feature as counts on the reference's ~1024 quantile
bins and each categorical one as counts on the reference vocabulary — enough to draw both histograms on the same
bins without any raw row. Pure functions (no I/O): window_state_api.py reads the state and the profile.

Display bins of a numeric feature with reference edges ``e_0 < … < e_{E-1}``:

- few distinct values (``E - 1 <= MAX_BINS``): the profile's own bins, exact — ``[e_{j-1}, e_j)`` and the point bin
  ``= e_{E-1}`` — plus "below the training minimum" / "above the training maximum" when the window has mass there;
- otherwise ``MAX_BINS`` equal-width bins between the reference's 0.5 % and 99.5 % quantile edges (so one outlier
  in training does not squeeze the shape into one bar), plus an open bin on each side. Each fine bin goes where its
  lower edge falls: a display bin can hold values up to one fine bin (≈ 0.1 % of the reference's mass) past its
  nominal upper edge; the open bins are exact (their bounds are fine edges).

Categorical features: the reference's categories (most frequent first) and its "other" bucket. Missing values are
counted apart, never binned.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vigil.kernels.fairness import GroupRates
from vigil.kernels.profile import CategoricalProfile, DatasetProfile, NumericProfile

#: Equal-width display bins of a numeric feature (plus the two open bins).
MAX_BINS = 20
#: The quantiles of the reference that bound the equal-width bins.
LOW_Q, HIGH_Q = 0.005, 0.995


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _numeric_bins(edges: np.ndarray[Any, Any]) -> tuple[list[str], np.ndarray[Any, Any]]:
    """Labels of the display bins and, per fine bin (``E + 2`` of them), the display bin it joins."""
    n_edges = edges.size
    if n_edges == 0:
        return ["no finite value"], np.zeros(2, dtype=np.int64)
    if n_edges - 1 <= MAX_BINS:  # the profile's own bins: underflow, interior, point, overflow
        labels = [f"< {_fmt(edges[0])}"]
        labels += [f"[{_fmt(edges[j - 1])}, {_fmt(edges[j])})" for j in range(1, n_edges)]
        labels += [f"= {_fmt(edges[-1])}", f"> {_fmt(edges[-1])}"]
        return labels, np.arange(n_edges + 2, dtype=np.int64)
    lo = float(edges[round(LOW_Q * (n_edges - 1))])
    hi = float(edges[round(HIGH_Q * (n_edges - 1))])
    width = (hi - lo) / MAX_BINS
    labels = [f"< {_fmt(lo)}"]
    labels += [f"[{_fmt(lo + k * width)}, {_fmt(lo + (k + 1) * width)})" for k in range(MAX_BINS)]
    labels += [f"> {_fmt(hi)}"]
    lower = np.concatenate(([-np.inf], edges[:-1], [edges[-1], np.inf]))  # each fine bin's lower edge
    with np.errstate(invalid="ignore", over="ignore"):
        k = np.floor((lower - lo) / width) if width > 0 else np.zeros_like(lower)
    inner = np.clip(np.nan_to_num(k, nan=0.0, posinf=MAX_BINS, neginf=0.0), 0, MAX_BINS - 1).astype(np.int64) + 1
    place = np.where(lower < lo, 0, np.where(lower > hi, MAX_BINS + 1, inner))
    return labels, place.astype(np.int64)


def _shares(counts: np.ndarray[Any, Any]) -> list[float]:
    total = float(counts.sum())
    return [float(c) / total if total > 0 else 0.0 for c in counts]


def _numeric(reference: NumericProfile, window: NumericProfile, i: int) -> dict[str, Any]:
    labels, place = _numeric_bins(reference.edges.feature(i))
    ref = np.bincount(place, weights=reference.feature_counts(i), minlength=len(labels))
    win = np.bincount(place, weights=window.feature_counts(i), minlength=len(labels))
    keep = np.ones(len(labels), dtype=bool)
    if reference.edges.feature(i).size - 1 <= MAX_BINS and len(labels) > 1:
        keep[[0, -1]] = (ref[[0, -1]] + win[[0, -1]]) > 0  # open bins only when something lies there
    return _feature(reference.names[i], "numeric", [lb for lb, k in zip(labels, keep, strict=True) if k],
                    ref[keep], win[keep], int(reference.missing[i]), int(window.missing[i]))  # fmt: skip


def _categorical(reference: CategoricalProfile, window: CategoricalProfile, i: int) -> dict[str, Any]:
    labels = [str(c) for c in reference.categories[i].tolist()] + ["other"]
    return _feature(reference.names[i], "categorical", labels, reference.feature_counts(i),
                    window.feature_counts(i), int(reference.missing[i]), int(window.missing[i]))  # fmt: skip


def _feature(
    name: str, kind: str, labels: list[str], ref: Any, win: Any, ref_missing: int, win_missing: int
) -> dict[str, Any]:
    ref_counts = np.asarray(ref, dtype=np.int64)
    win_counts = np.asarray(win, dtype=np.int64)
    return {
        "name": name,
        "kind": kind,
        "bins": labels,
        "reference": {"counts": ref_counts.tolist(), "shares": _shares(ref_counts), "missing": ref_missing},
        "window": {"counts": win_counts.tolist(), "shares": _shares(win_counts), "missing": win_missing},
    }


def feature_distributions(reference: DatasetProfile, window: DatasetProfile) -> list[dict[str, Any]]:
    """Per feature (numeric first, then categorical, each in the profile's order): display bins, and the counts
    and shares of the reference and of the window on them (see the module docstring)."""
    out: list[dict[str, Any]] = []
    if reference.numeric is not None and window.numeric is not None:
        out += [_numeric(reference.numeric, window.numeric, i) for i in range(len(reference.numeric.names))]
    if reference.categorical is not None and window.categorical is not None:
        out += [
            _categorical(reference.categorical, window.categorical, i) for i in range(len(reference.categorical.names))
        ]
    return out


def _rate(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def group_rates(rates: GroupRates, names: list[str]) -> list[dict[str, Any]]:
    """Per group of the sensitive attribute (``names``: the reference's categories, then "other"): labelled rows,
    selection rate, true and false positive rates — the figures whose spread is the window's fairness gaps."""
    r = rates.rates()
    out = []
    for g in range(rates.n_groups):
        out.append(
            {
                "group": names[g] if g < len(names) else f"group {g}",
                "n": int(rates.counts[g, 0]),
                "selection_rate": _rate(r["selection_rate"][g]),
                "tpr": _rate(r["tpr"][g]),
                "fpr": _rate(r["fpr"][g]),
            }
        )
    return out
