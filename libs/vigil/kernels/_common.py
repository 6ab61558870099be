"""Input validation and array layouts shared by the kernel modules (their serialisation: :mod:`vigil.kernels.encoding`).

Layout decision (one for the whole package): a table of numeric features is a **2-D array of shape
``(n_rows, n_features)`` in column-major (Fortran) order**, dtype float32 or float64. Column-major means each feature
is one contiguous run of memory, which is what a per-feature kernel streams through (and the whole table is one flat
buffer that the binning threads cut into equal runs). For convenience a C-ordered 2-D array, a 1-D array (one
feature) or a sequence of equal-length 1-D columns is accepted too; those are copied once into a Fortran array (that
copy is the only cost, and it is avoided by passing ``np.asfortranarray(x)`` or ``np.empty((n, f), order="F")``
filled column by column). Other real dtypes are converted to float64. Integer codes (categories, labels, groups) are
int64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

#: The narrowed fast-math flag set. Blanket ``fastmath=True`` adds ``nnan``/``ninf``, which lets LLVM delete our
#: explicit NaN/inf checks (stumpy #708); these five only relax ordering/precision of finite arithmetic. Even so,
#: measured with numba 0.68: under this combined set ``np.isfinite(a - b)`` folds to True when ``b`` is NaN. So only
#: kernels whose inputs are already finite (the drift statistics over counts) use it; every kernel that decides
#: what is missing runs without fast-math.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}  # a set: numba rejects frozenset; never mutate it

FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]
F64Array: TypeAlias = npt.NDArray[np.float64]
I64Array: TypeAlias = npt.NDArray[np.int64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
Table: TypeAlias = "np.ndarray[Any, Any] | Sequence[np.ndarray[Any, Any]]"


def as_float_columns(x: Table, *, name: str = "x") -> FloatArray:
    """Return ``x`` as a Fortran-ordered ``(n_rows, n_features)`` float32/float64 array (zero-copy when it is one).

    Raises ``ValueError`` for anything that is not a real-valued table (complex, object, strings, 3-D, ragged).
    """
    if isinstance(x, np.ndarray):
        arr = x
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D (n_rows, n_features) array, got shape {arr.shape}")
    else:
        cols = [np.asarray(c) for c in x]
        if not cols:
            raise ValueError(f"{name}: expected at least one column")
        if any(c.ndim != 1 for c in cols):
            raise ValueError(f"{name}: every column must be 1-D")
        n = cols[0].shape[0]
        if any(c.shape[0] != n for c in cols):
            raise ValueError(f"{name}: columns have different lengths")
        dtype = np.result_type(*[_float_dtype(c.dtype, name) for c in cols])
        arr = np.empty((n, len(cols)), dtype=dtype, order="F")
        for j, c in enumerate(cols):  # a loop over columns, never rows
            arr[:, j] = c
        return arr
    dtype = _float_dtype(arr.dtype, name)
    return np.asfortranarray(arr, dtype=dtype)


def _float_dtype(dtype: np.dtype[Any], name: str) -> np.dtype[Any]:
    if dtype == np.float32 or dtype == np.float64:
        return dtype
    if dtype.kind in "biuf":
        return np.dtype(np.float64)
    raise ValueError(f"{name}: expected real numbers, got dtype {dtype}")


def as_int_columns(x: Table, *, name: str = "codes") -> I64Array:
    """Return integer codes as a Fortran-ordered ``(n_rows, n_features)`` int64 array (negative = missing)."""
    if isinstance(x, np.ndarray):
        arr = x.reshape(-1, 1) if x.ndim == 1 else x
        if arr.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D (n_rows, n_features) array, got shape {arr.shape}")
        if arr.dtype.kind not in "biu":
            raise ValueError(f"{name}: expected integer codes, got dtype {arr.dtype}")
        return np.asfortranarray(arr, dtype=np.int64)
    cols = [np.asarray(c) for c in x]
    if not cols or any(c.ndim != 1 or c.dtype.kind not in "biu" for c in cols):
        raise ValueError(f"{name}: expected a non-empty sequence of 1-D integer columns")
    n = cols[0].shape[0]
    if any(c.shape[0] != n for c in cols):
        raise ValueError(f"{name}: columns have different lengths")
    out = np.empty((n, len(cols)), dtype=np.int64, order="F")
    for j, c in enumerate(cols):
        out[:, j] = c
    return out


def as_float_vector(x: npt.ArrayLike, *, name: str) -> FloatArray:
    """A contiguous 1-D float32/float64 vector (other real dtypes become float64)."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=_float_dtype(arr.dtype, name))


def as_label_vector(x: npt.ArrayLike, *, name: str) -> I64Array:
    """Labels/codes as a contiguous int64 vector. Non-finite floats and negative values become -1 (= missing);
    non-integral floats are rejected because silently truncating a label is a wrong answer, not a missing one."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind in "biu":
        return np.ascontiguousarray(arr, dtype=np.int64)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        safe = np.where(finite, arr, -1.0)
        if np.any(safe != np.round(safe)):
            raise ValueError(f"{name}: labels must be integral")
        safe = np.where(safe < 0, -1.0, np.minimum(safe, 2.0**62))
        return np.ascontiguousarray(safe.astype(np.int64))
    raise ValueError(f"{name}: expected integer or float labels, got dtype {arr.dtype}")


def check_same_length(**arrays: np.ndarray[Any, Any]) -> int:
    """All arrays have the same first dimension; return it."""
    lengths = {k: a.shape[0] for k, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {lengths}")
    return next(iter(lengths.values()))


def feature_names(names: Sequence[str] | None, n_features: int, *, prefix: str = "f") -> tuple[str, ...]:
    """Validated feature names (default ``f0, f1, …``; categorical ``c0, …``): right count, unique, non-empty."""
    if names is None:
        return tuple(f"{prefix}{i}" for i in range(n_features))
    out = tuple(str(n) for n in names)
    if len(out) != n_features:
        raise ValueError(f"got {len(out)} names for {n_features} features")
    if len(set(out)) != len(out) or any(not n for n in out):
        raise ValueError("feature names must be unique and non-empty")
    return out


def finite_or_none(v: float) -> float | None:
    """JSON has no NaN/inf: map them to None (events reject non-finite numbers)."""
    return float(v) if np.isfinite(v) else None
