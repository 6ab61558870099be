"""Compact array serialisation: how kernel results (profiles, sketches, fairness counts) travel inside JSON.

An array is ``{"dtype": "<f8", "n": 12, "z": base64(zlib(little-endian bytes))}``: JSON-able (the registry keeps
profiles in JSONB and in events, the monitor keeps window states and label joins in Postgres), far smaller than a
list of numbers, and never pickle. Public because services store their own arrays in the same format.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt

_ALLOWED_DTYPES = frozenset({"<f8", "<f4", "<i8", "<u4", "<u2", "|u1"})


def encode_array(a: np.ndarray[Any, Any], *, shrink_counts: bool = False) -> dict[str, Any]:
    """Encode a 1-D array; ``shrink_counts`` stores non-negative integers in the smallest unsigned type that fits."""
    flat = np.ascontiguousarray(a).reshape(-1)
    if shrink_counts and flat.dtype.kind in "iu":
        top = int(flat.max()) if flat.size else 0
        if int(flat.min(initial=0)) < 0:
            raise ValueError("counts must be non-negative")
        for t in ("|u1", "<u2", "<u4", "<i8"):
            if top <= np.iinfo(np.dtype(t)).max:
                flat = flat.astype(np.dtype(t))
                break
    dt = flat.dtype.newbyteorder("<") if flat.dtype.byteorder not in "<|" else flat.dtype
    flat = flat.astype(dt, copy=False)
    if dt.str not in _ALLOWED_DTYPES:
        raise ValueError(f"cannot encode dtype {dt.str}")
    return {"dtype": dt.str, "n": int(flat.size), "z": base64.b64encode(zlib.compress(flat.tobytes(), 6)).decode()}


def decode_array(obj: Any, *, dtype: npt.DTypeLike, name: str) -> np.ndarray[Any, Any]:
    """Decode :func:`encode_array` output, checking dtype whitelist and length; returns a native ``dtype`` array."""
    if not isinstance(obj, dict) or set(obj) != {"dtype", "n", "z"}:
        raise ValueError(f"{name}: malformed encoded array")
    dt = obj["dtype"]
    if dt not in _ALLOWED_DTYPES:
        raise ValueError(f"{name}: dtype {dt!r} not allowed")
    n = obj["n"]
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"{name}: bad length")
    try:
        raw = zlib.decompress(base64.b64decode(obj["z"], validate=True))
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"{name}: corrupt data") from exc
    arr = np.frombuffer(raw, dtype=np.dtype(dt))
    if arr.size != n:
        raise ValueError(f"{name}: expected {n} values, got {arr.size}")
    return arr.astype(dtype)
