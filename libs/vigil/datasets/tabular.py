"""Numeric CSV datasets: how the examples write a dataset version and read it back.

A dataset file is a header line of column names and one row of numbers per line; the label column is ``target``.
Its URI is ``file://…`` and its digest the sha256 of the file's bytes — what ``data.updated`` carries and what the
trainer verifies before an entrypoint sees the file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

TARGET = "target"


def write_csv(path: Path, x: npt.ArrayLike, y: npt.ArrayLike, names: list[str]) -> None:
    """Write features ``x`` (rows × features) and labels ``y`` as a CSV with a header."""
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64).reshape(-1, 1)
    if xa.ndim != 2 or xa.shape[1] != len(names) or ya.shape[0] != xa.shape[0]:
        raise ValueError("x must be rows × len(names) and y one label per row")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.hstack([xa, ya]), delimiter=",", header=",".join([*names, TARGET]), comments="", fmt="%.10g")


def read_csv(path: Path) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], list[str]]:
    """Features, labels and feature names of a dataset file written by :func:`write_csv`."""
    with path.open() as f:
        header = f.readline().strip().split(",")
    if TARGET not in header:
        raise ValueError(f"{path.name}: no {TARGET!r} column")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    t = header.index(TARGET)
    names = [h for i, h in enumerate(header) if i != t]
    return np.delete(data, t, axis=1), data[:, t], names


def describe(path: Path, names: list[str], rows: int) -> dict[str, Any]:
    """The ``data.updated`` fields of a dataset file: URI, content digest, columns, row count."""
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    columns = [{"name": n, "type": "float"} for n in names] + [{"name": TARGET, "type": "int"}]
    return {"uri": path.resolve().as_uri(), "content_digest": digest, "columns": columns, "row_count": rows}
