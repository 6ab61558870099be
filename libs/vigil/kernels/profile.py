"""Reference and window profiles: what the trainer records about training data and the monitor about live data.

Why profiles and not raw data: the monitor must compare millions of live rows per window against the training data
without keeping either around. A **reference profile** (trainer, once per model version) holds per numeric feature
fine quantile bin edges, the count in each bin, and exact moments (count, mean, M2, min, max, missing); per
categorical feature a frequency table of the top categories plus an "other" bucket. A **window profile** (monitor)
bins live values on the *reference's* edges in one pass. Profiles on the same edges merge by adding counts (and
combining moments exactly), so the profile of a day is the merge of its windows. Every drift statistic in
:mod:`vigil.kernels.drift` is computed from two profiles.

Bins of one numeric feature with strictly increasing edges ``e_0 < … < e_{E-1}`` (``E ≥ 1``; ``E = 0`` only when the
reference had no finite value): ``E + 2`` counts ::

    0        underflow   (-inf, e_0)
    j=1..E-1 interior    [e_{j-1}, e_j)
    E        point       {e_{E-1}}          (the reference maximum itself)
    E+1      overflow    (e_{E-1}, +inf)

i.e. the bin of ``x`` is ``searchsorted(edges, x, side="right")``, moved to ``E+1`` when ``x > e_{E-1}``. The edges
are order statistics of the reference (method "lower"), de-duplicated, so ``e_0`` is its minimum and ``e_{E-1}`` its
maximum; a constant feature has one edge and all its mass in the point bin.

Missing: NaN and ±inf are *missing* — counted per feature, excluded from bins and moments, never an error.

Serialisation: :meth:`DatasetProfile.to_dict` is a compact JSON-able dict (arrays as base64 of zlib-compressed
little-endian bytes), :meth:`DatasetProfile.to_bytes` its canonical UTF-8 JSON. No pickle anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from vigil.kernels._common import (
    F64Array,
    FloatArray,
    I64Array,
    Table,
    as_float_columns,
    as_int_columns,
    feature_names,
)
from vigil.kernels._threads import executor, in_worker
from vigil.kernels.binning import LookupGrid, bin_table, build_grid, empty_state
from vigil.kernels.encoding import decode_array, encode_array

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_MAX_CATEGORIES",
    "BinEdges",
    "CategoricalProfile",
    "DatasetProfile",
    "NumericAccumulator",
    "NumericProfile",
    "categorical_reference",
    "categorical_window",
    "encode_categories",
    "numeric_profile",
    "quantile_edges",
    "reference_profile",
]

#: Fine quantile bins per numeric feature. KS from profiles is exact up to the largest bin mass (≈ 1/1024 of the
#: reference for continuous data); PSI/JS/χ²/Hellinger use coarse groups of these bins (see drift.py).
DEFAULT_BINS = 1024
#: Categories kept per categorical feature; rarer ones share the "other" bucket.
DEFAULT_MAX_CATEGORIES = 64
#: Above this many values the per-feature sorts of :func:`quantile_edges` run on the worker threads.
_PARALLEL_SORT_VALUES = 1 << 18

_FORMAT = "vigil.profile"
_VERSION = 1


# -- kernels -----------------------------------------------------------------------------------------------------


# Kernels take a table as its flat column-major buffer plus ``n_rows`` (column f is ``x[f*n_rows:(f+1)*n_rows]``):
# numba types an (n, 1) array as C-contiguous, so 2-D 'F' signatures would reject one-feature tables.


@njit("void(int64[::1], int64, int64[::1], int64[::1], int64[::1], int64[::1])", cache=True, nogil=True)
def _count_codes_kernel(codes, n_rows, n_cats, counts, count_off, missing):  # type: ignore[no-untyped-def]
    """Category counts per feature: code in [0, K) → its bucket, ≥ K → "other" (bucket K), < 0 → missing."""
    for f in range(n_cats.size):
        k = n_cats[f]
        cnt = counts[count_off[f] : count_off[f + 1]]
        miss = 0
        for i in range(n_rows):
            c = codes[f * n_rows + i]
            if c < 0:
                miss += 1
            else:
                cnt[min(c, k)] += 1
        missing[f] += miss


# -- numeric -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BinEdges:
    """Quantile bin edges of every numeric feature, concatenated (``edges[offsets[f]:offsets[f+1]]`` is feature f).

    Also carries the derived lookup grid the binning kernel uses (built once, never serialised).
    """

    names: tuple[str, ...]
    edges: F64Array
    offsets: I64Array
    _grid: LookupGrid = field(init=False, repr=False)

    def __post_init__(self) -> None:
        edges = np.ascontiguousarray(self.edges, dtype=np.float64)
        offsets = np.ascontiguousarray(self.offsets, dtype=np.int64)
        if offsets.ndim != 1 or offsets.size != len(self.names) + 1 or offsets[0] != 0 or offsets[-1] != edges.size:
            raise ValueError("edge offsets do not match names/edges")
        n_edges = np.diff(offsets)
        if np.any(n_edges < 0) or not np.all(np.isfinite(edges)):
            raise ValueError("edges must be finite with non-decreasing offsets")
        inner = np.ones(edges.size, dtype=bool)
        inner[offsets[:-1][n_edges > 0]] = False  # the first edge of a feature has no predecessor to compare
        # compare, never subtract: neighbouring edges may be ±1.7e308 apart
        if edges.size > 1 and np.any((edges[1:] <= edges[:-1])[inner[1:]]):
            raise ValueError("edges must be strictly increasing within a feature")
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "_grid", build_grid(edges, offsets))

    @property
    def n_features(self) -> int:
        return len(self.names)

    @property
    def n_edges(self) -> I64Array:
        """Edges per feature (``E``); feature f has ``E + 2`` bins."""
        return np.diff(self.offsets)

    @property
    def count_offsets(self) -> I64Array:
        """Offsets of each feature's ``E + 2`` counts in a concatenated counts array."""
        return self.offsets + 2 * np.arange(self.offsets.size, dtype=np.int64)

    def feature(self, i: int) -> F64Array:
        return self.edges[self.offsets[i] : self.offsets[i + 1]]

    def same_as(self, other: BinEdges) -> bool:
        return self is other or (
            self.names == other.names
            and np.array_equal(self.offsets, other.offsets)
            and np.array_equal(self.edges, other.edges)
        )


def quantile_edges(x: Table, *, names: Sequence[str] | None = None, n_bins: int = DEFAULT_BINS) -> BinEdges:
    """Fine quantile edges of each column of ``x`` (``n_bins`` intervals → at most ``n_bins + 1`` distinct edges).

    Edges are data values (order statistics, method "lower"), so ties collapse and a constant feature gets one edge.
    To profile training data that does not fit in memory, call this on a sample and bin every chunk with
    :class:`NumericAccumulator` — counts and moments stay exact, only the edge placement comes from the sample.
    """
    if not isinstance(n_bins, int | np.integer) or not 1 <= n_bins <= 1 << 16:
        raise ValueError("n_bins must be an integer in [1, 65536]")
    arr = as_float_columns(x)
    n_features = arr.shape[1]
    cols = [arr[:, f] for f in range(n_features)]
    if n_features > 1 and arr.shape[0] * n_features >= _PARALLEL_SORT_VALUES and not in_worker():
        per_feature = list(executor().map(lambda c: _order_statistics(c, int(n_bins)), cols))
    else:
        per_feature = [_order_statistics(c, int(n_bins)) for c in cols]
    offsets = np.zeros(n_features + 1, dtype=np.int64)
    np.cumsum([e.size for e in per_feature], out=offsets[1:])
    edges = np.concatenate(per_feature) if per_feature else np.zeros(0)
    return BinEdges(feature_names(names, n_features), edges, offsets)


def _order_statistics(col: FloatArray, n_bins: int) -> F64Array:
    """Finite values of one column at ranks ``floor(k (m-1) / n_bins)``, k = 0..n_bins, de-duplicated. numpy's sort
    (SIMD, GIL released) in the column's own dtype; a float32 value widens to float64 exactly, so sorting before or
    after widening gives the same edges."""
    vals = col[np.isfinite(col)]
    if vals.size == 0:
        return np.zeros(0, dtype=np.float64)
    vals.sort()
    picked = vals[(np.arange(n_bins + 1, dtype=np.int64) * (vals.size - 1)) // n_bins].astype(np.float64)
    keep = np.empty(picked.size, dtype=bool)
    keep[0] = True
    np.greater(picked[1:], picked[:-1], out=keep[1:])
    return picked[keep]


@dataclass(frozen=True, eq=False)
class NumericProfile:
    """Bin counts and exact moments of numeric features on given :class:`BinEdges`.

    ``counts`` is concatenated per feature (``counts[edges.count_offsets[f]:…]``, ``E + 2`` bins, layout in the
    module docstring). ``n`` counts finite values, ``missing`` NaN/±inf. ``mean``/``m2``/``min``/``max`` are over
    the finite values (NaN when ``n == 0``); ``m2`` is the sum of squared deviations from the mean.
    ``tail_sums[f] = (sum of underflow values, sum of overflow values)``: with the outer bins' counts they give the
    mean of out-of-range mass, which makes W1 exact for it (see drift.py).
    """

    edges: BinEdges
    counts: I64Array
    missing: I64Array
    mean: F64Array
    m2: F64Array
    min: F64Array
    max: F64Array
    tail_sums: F64Array

    @property
    def names(self) -> tuple[str, ...]:
        return self.edges.names

    @property
    def n(self) -> I64Array:
        """Finite values per feature (= the sum of that feature's bin counts)."""
        offs = self.edges.count_offsets
        return np.add.reduceat(self.counts, offs[:-1]) if self.counts.size else np.zeros(0, dtype=np.int64)

    @property
    def var(self) -> F64Array:
        """Population variance (ddof = 0) per feature; NaN when a feature has no finite value."""
        n = self.n
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, self.m2 / np.maximum(n, 1), np.nan)

    @property
    def std(self) -> F64Array:
        return np.sqrt(self.var)

    def feature_counts(self, i: int) -> I64Array:
        offs = self.edges.count_offsets
        return self.counts[offs[i] : offs[i + 1]]

    def merge(self, other: NumericProfile) -> NumericProfile:
        """The profile of the union of both samples (counts add, moments combine exactly — Chan et al.)."""
        if not self.edges.same_as(other.edges):
            raise ValueError("cannot merge profiles binned on different edges")
        na = self.n.astype(np.float64)
        nb = other.n.astype(np.float64)
        n = na + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = other.mean - self.mean
            mean = np.where(nb == 0, self.mean, np.where(na == 0, other.mean, self.mean + delta * nb / n))
            m2 = np.where(
                nb == 0, self.m2, np.where(na == 0, other.m2, self.m2 + other.m2 + delta * delta * na * nb / n)
            )
        return NumericProfile(
            edges=self.edges,
            counts=self.counts + other.counts,
            missing=self.missing + other.missing,
            mean=mean,
            m2=m2,
            min=np.fmin(self.min, other.min),
            max=np.fmax(self.max, other.max),
            tail_sums=self.tail_sums + other.tail_sums,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "n_edges": encode_array(self.edges.n_edges, shrink_counts=True),
            "edges": encode_array(self.edges.edges),
            "counts": encode_array(self.counts, shrink_counts=True),
            "missing": encode_array(self.missing, shrink_counts=True),
            "mean": encode_array(self.mean),
            "m2": encode_array(self.m2),
            "min": encode_array(self.min),
            "max": encode_array(self.max),
            "tail_sums": encode_array(self.tail_sums),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NumericProfile:
        names = d.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("numeric profile: names must be a list of strings")
        n_f = len(names)
        n_edges = decode_array(d.get("n_edges"), dtype=np.int64, name="n_edges")
        if n_edges.size != n_f:
            raise ValueError("numeric profile: n_edges length")
        offsets = np.zeros(n_f + 1, dtype=np.int64)
        np.cumsum(n_edges, out=offsets[1:])
        edges = BinEdges(
            feature_names(names, n_f), decode_array(d.get("edges"), dtype=np.float64, name="edges"), offsets
        )
        counts = decode_array(d.get("counts"), dtype=np.int64, name="counts")
        if counts.size != int(edges.count_offsets[-1]):
            raise ValueError("numeric profile: counts length does not match edges")
        per_feature = {k: decode_array(d.get(k), dtype=np.float64, name=k) for k in ("mean", "m2", "min", "max")}
        missing = decode_array(d.get("missing"), dtype=np.int64, name="missing")
        if any(a.size != n_f for a in (*per_feature.values(), missing)):
            raise ValueError("numeric profile: per-feature arrays have the wrong length")
        tail_sums = decode_array(d.get("tail_sums"), dtype=np.float64, name="tail_sums")
        if tail_sums.size != 2 * n_f:
            raise ValueError("numeric profile: tail_sums has the wrong length")
        return cls(edges=edges, counts=counts, missing=missing, tail_sums=tail_sums.reshape(n_f, 2), **per_feature)


class NumericAccumulator:
    """Bins a stream of row chunks on fixed edges into one profile, in bounded memory (no per-chunk profiles).

    ``NumericAccumulator(edges).update(chunk1).update(chunk2).profile()`` equals ``numeric_profile(vstack(...))``.
    """

    def __init__(self, edges: BinEdges) -> None:
        self.edges = edges
        self._counts = np.zeros(int(edges.count_offsets[-1]), dtype=np.int64)
        self._ints, self._sums = empty_state(edges.n_features)
        self._count_off = edges.count_offsets

    def update(self, x: Table) -> NumericAccumulator:
        """Bin the rows of ``x`` (``(n_rows, n_features)``, see :mod:`vigil.kernels._common` for layouts)."""
        arr = as_float_columns(x)
        if arr.shape[1] != self.edges.n_features:
            raise ValueError(f"expected {self.edges.n_features} features, got {arr.shape[1]}")
        bin_table(arr, self.edges.offsets, self._count_off, self.edges._grid, (self._counts, self._ints, self._sums))
        return self

    def profile(self) -> NumericProfile:
        empty = self._ints[:, 1] == 0
        return NumericProfile(
            edges=self.edges,
            counts=self._counts.copy(),
            missing=self._ints[:, 0].copy(),
            mean=np.where(empty, np.nan, self._sums[:, 0]),
            m2=np.where(empty, 0.0, self._sums[:, 1]),
            min=np.where(empty, np.nan, self._sums[:, 2]),
            max=np.where(empty, np.nan, self._sums[:, 3]),
            tail_sums=self._sums[:, 4:6].copy(),
        )


def numeric_profile(x: Table, edges: BinEdges) -> NumericProfile:
    """Profile ``x`` on given edges — the monitor's window profile (pass the reference profile's ``edges``)."""
    return NumericAccumulator(edges).update(x).profile()


def reference_profile(x: Table, *, names: Sequence[str] | None = None, n_bins: int = DEFAULT_BINS) -> NumericProfile:
    """The trainer's reference profile of numeric data: quantile edges from ``x``, then ``x`` binned on them."""
    arr = as_float_columns(x)
    return numeric_profile(arr, quantile_edges(arr, names=names, n_bins=n_bins))


# -- categorical -------------------------------------------------------------------------------------------------


def _missing_mask(values: np.ndarray[Any, Any]) -> npt.NDArray[np.bool_]:
    """Missing category values: NaN for floats, the empty string for strings; ints and bools are never missing."""
    if values.dtype.kind == "f":
        return ~np.isfinite(values)
    if values.dtype.kind in "US":
        return values == values.dtype.type()
    if values.dtype.kind in "biu":
        return np.zeros(values.shape, dtype=bool)
    raise ValueError(f"categorical values must be str, int, bool or float arrays, got dtype {values.dtype}")


def encode_categories(values: npt.ArrayLike, categories: np.ndarray[Any, Any]) -> I64Array:
    """Codes of ``values`` in ``categories``: index if known, ``len(categories)`` ("other") if not, -1 if missing.

    Vectorised (sort + searchsorted), no Python loop over rows.
    """
    vals = np.asarray(values)
    if vals.ndim != 1:
        raise ValueError("categorical values must be 1-D")
    missing = _missing_mask(vals)
    k = categories.size
    if k and (vals.dtype.kind in "US") != (categories.dtype.kind in "US"):
        raise ValueError("categorical values are not comparable with the reference categories (str vs number)")
    if k == 0:
        return np.where(missing, -1, 0).astype(np.int64)
    try:
        order = np.argsort(categories, kind="stable")
        ordered = categories[order]
        pos = np.clip(np.searchsorted(ordered, vals), 0, k - 1)
        found = ordered[pos] == vals
    except TypeError as exc:  # e.g. strings against an int vocabulary
        raise ValueError("categorical values are not comparable with the reference categories") from exc
    codes = np.where(found, order[pos], k)
    return np.where(missing, -1, codes).astype(np.int64)


def _category_kind(values: np.ndarray[Any, Any]) -> str:
    kind = {"U": "str", "S": "str", "i": "int", "u": "int", "b": "bool", "f": "float"}.get(values.dtype.kind)
    if kind is None:
        raise ValueError(f"categorical values must be str, int, bool or float arrays, got dtype {values.dtype}")
    return kind


@dataclass(frozen=True, eq=False)
class CategoricalProfile:
    """Frequency tables of categorical features: per feature the counts of its ``K`` reference categories (most
    frequent first) followed by one "other" bucket, concatenated; plus the missing count."""

    names: tuple[str, ...]
    categories: tuple[np.ndarray[Any, Any], ...]
    counts: I64Array
    missing: I64Array

    @property
    def offsets(self) -> I64Array:
        off = np.zeros(len(self.names) + 1, dtype=np.int64)
        np.cumsum([c.size + 1 for c in self.categories], out=off[1:])
        return off

    @property
    def n(self) -> I64Array:
        off = self.offsets
        return np.add.reduceat(self.counts, off[:-1]) if self.counts.size else np.zeros(0, dtype=np.int64)

    def feature_counts(self, i: int) -> I64Array:
        off = self.offsets
        return self.counts[off[i] : off[i + 1]]

    def same_vocabulary(self, other: CategoricalProfile) -> bool:
        return self.names == other.names and all(
            a.dtype.kind == b.dtype.kind and np.array_equal(a, b)
            for a, b in zip(self.categories, other.categories, strict=True)
        )

    def merge(self, other: CategoricalProfile) -> CategoricalProfile:
        if not self.same_vocabulary(other):
            raise ValueError("cannot merge categorical profiles with different vocabularies")
        return CategoricalProfile(self.names, self.categories, self.counts + other.counts, self.missing + other.missing)

    def window(self, columns: Sequence[npt.ArrayLike]) -> CategoricalProfile:
        """Profile live values on this profile's vocabulary (see :func:`categorical_window`)."""
        return categorical_window(columns, self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "kinds": [_category_kind(c) for c in self.categories],
            "categories": [c.tolist() for c in self.categories],
            "counts": encode_array(self.counts, shrink_counts=True),
            "missing": encode_array(self.missing, shrink_counts=True),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CategoricalProfile:
        names, kinds, cats = d.get("names"), d.get("kinds"), d.get("categories")
        if not (isinstance(names, list) and isinstance(kinds, list) and isinstance(cats, list)):
            raise ValueError("categorical profile: names/kinds/categories must be lists")
        if not len(names) == len(kinds) == len(cats):
            raise ValueError("categorical profile: names/kinds/categories lengths differ")
        dtypes = {"str": np.str_, "int": np.int64, "bool": np.bool_, "float": np.float64}
        categories = []
        for kind, values in zip(kinds, cats, strict=True):
            if kind not in dtypes or not isinstance(values, list):
                raise ValueError("categorical profile: bad category kind")
            arr: np.ndarray[Any, Any] = np.asarray(values, dtype=dtypes[kind])
            if np.unique(arr).size != arr.size:
                raise ValueError("categorical profile: duplicate categories")
            categories.append(arr)
        prof = cls(
            feature_names(names, len(names)),
            tuple(categories),
            decode_array(d.get("counts"), dtype=np.int64, name="counts"),
            decode_array(d.get("missing"), dtype=np.int64, name="missing"),
        )
        if prof.counts.size != int(prof.offsets[-1]) or prof.missing.size != len(names):
            raise ValueError("categorical profile: counts/missing lengths do not match categories")
        return prof


def _count_codes(codes: I64Array, n_cats: I64Array) -> tuple[I64Array, I64Array]:
    off = np.zeros(n_cats.size + 1, dtype=np.int64)
    np.cumsum(n_cats + 1, out=off[1:])
    counts = np.zeros(int(off[-1]), dtype=np.int64)
    missing = np.zeros(n_cats.size, dtype=np.int64)
    _count_codes_kernel(codes.ravel(order="F"), np.int64(codes.shape[0]), n_cats, counts, off, missing)
    return counts, missing


def categorical_reference(
    columns: Sequence[npt.ArrayLike],
    *,
    names: Sequence[str] | None = None,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
) -> CategoricalProfile:
    """Reference frequency tables: per column its ``max_categories`` most frequent values (ties by value), the rest
    counted as "other". Values: 1-D arrays of str (``""`` = missing), int, bool or float (NaN = missing)."""
    if max_categories < 1:
        raise ValueError("max_categories must be >= 1")
    arrays = [np.asarray(c) for c in columns]
    if any(a.ndim != 1 for a in arrays):
        raise ValueError("categorical columns must be 1-D")
    cats = []
    for a in arrays:  # a loop over columns; np.unique does the per-row work
        _category_kind(a)
        present = a[~_missing_mask(a)]
        values, freq = np.unique(present, return_counts=True)
        top = np.argsort(-freq, kind="stable")[:max_categories]
        cats.append(values[top])
    empty = np.zeros(0, dtype=np.int64)
    vocab = CategoricalProfile(feature_names(names, len(arrays), prefix="c"), tuple(cats), empty, empty)
    return categorical_window(arrays, vocab)


def categorical_window(columns: Sequence[npt.ArrayLike], reference: CategoricalProfile) -> CategoricalProfile:
    """Frequency tables of live values on the reference's vocabulary (unknown values → "other")."""
    arrays = [np.asarray(c) for c in columns]
    if len(arrays) != len(reference.names):
        raise ValueError(f"expected {len(reference.names)} categorical columns, got {len(arrays)}")
    codes = (
        as_int_columns([encode_categories(a, c) for a, c in zip(arrays, reference.categories, strict=True)])
        if (arrays)
        else np.zeros((0, 0), dtype=np.int64, order="F")
    )
    n_cats = np.array([c.size for c in reference.categories], dtype=np.int64)
    counts, missing = _count_codes(codes, n_cats)
    return CategoricalProfile(reference.names, reference.categories, counts, missing)


# -- the whole dataset -------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DatasetProfile:
    """Numeric and categorical profiles of one dataset or window — the unit the registry stores and events carry."""

    numeric: NumericProfile | None = None
    categorical: CategoricalProfile | None = None

    def __post_init__(self) -> None:
        names = (self.numeric.names if self.numeric else ()) + (self.categorical.names if self.categorical else ())
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique across numeric and categorical features")

    @classmethod
    def build(
        cls,
        numeric: Table | None = None,
        categorical: Sequence[npt.ArrayLike] | None = None,
        *,
        numeric_names: Sequence[str] | None = None,
        categorical_names: Sequence[str] | None = None,
        n_bins: int = DEFAULT_BINS,
        max_categories: int = DEFAULT_MAX_CATEGORIES,
    ) -> DatasetProfile:
        """Reference profile of training data (the trainer's call)."""
        num = reference_profile(numeric, names=numeric_names, n_bins=n_bins) if numeric is not None else None
        cat = (
            categorical_reference(categorical, names=categorical_names, max_categories=max_categories)
            if categorical is not None
            else None
        )
        return cls(num, cat)

    def window(
        self, numeric: Table | None = None, categorical: Sequence[npt.ArrayLike] | None = None
    ) -> DatasetProfile:
        """Window profile of live data on this (reference) profile's edges and vocabularies (the monitor's call)."""
        if (numeric is None) != (self.numeric is None) or (categorical is None) != (self.categorical is None):
            raise ValueError("the window must have the same kinds of features as the reference")
        num = numeric_profile(numeric, self.numeric.edges) if numeric is not None and self.numeric else None
        cat = (
            categorical_window(categorical, self.categorical) if categorical is not None and self.categorical else None
        )
        return DatasetProfile(num, cat)

    def merge(self, other: DatasetProfile) -> DatasetProfile:
        """Profile of the union of two windows binned on the same reference."""
        if (self.numeric is None) != (other.numeric is None) or (self.categorical is None) != (
            other.categorical is None
        ):
            raise ValueError("profiles have different kinds of features")
        num = self.numeric.merge(other.numeric) if self.numeric is not None and other.numeric is not None else None
        cat = (
            self.categorical.merge(other.categorical)
            if self.categorical is not None and other.categorical is not None
            else None
        )
        return DatasetProfile(num, cat)

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON-able form (what the registry stores and ``training.completed`` carries)."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "numeric": self.numeric.to_dict() if self.numeric is not None else None,
            "categorical": self.categorical.to_dict() if self.categorical is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetProfile:
        """Parse and validate (untrusted input: lengths, dtypes and edge order are checked; never unpickles)."""
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise ValueError("not a vigil profile")
        if d.get("version") != _VERSION:
            raise ValueError(f"unsupported profile version {d.get('version')!r}")
        num = NumericProfile.from_dict(d["numeric"]) if d.get("numeric") is not None else None
        cat = CategoricalProfile.from_dict(d["categorical"]) if d.get("categorical") is not None else None
        return cls(num, cat)

    def to_bytes(self) -> bytes:
        """Canonical UTF-8 JSON of :meth:`to_dict` (sorted keys, no whitespace) — stable for content digests."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> DatasetProfile:
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError("profile bytes are not JSON") from exc
        return cls.from_dict(obj)
