"""The label join: prediction id → (window, score, predicted class, group), kept compact and searchable.

Labels arrive later (minutes to hours) with only a prediction id. Per deployment the monitor keeps, for every
prediction still inside the label horizon, 15 bytes: a stable 64-bit hash of its id, its score (float32), predicted
class (int8) and sensitive-attribute group (int16), plus which window it belongs to. Rows live in sorted runs
merged log-structured style (a new batch is a run; runs of similar size merge), so adding is amortised
O(log n) per row and a lookup is a binary search per run — no Python loop over rows, no dict of millions of
strings. A 64-bit hash collision would join a label to the wrong prediction; with 10⁸ live rows the chance of any
collision is ~3·10⁻⁴ — accepted and documented.

Persistence: each batch's columns are also a value in the faust ``joins`` table (see streams.py), so after a
restart the index is rebuilt from the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from vigil.kernels._common import decode_array, encode_array
from vigil.monitor.ingest import BatchColumns


@dataclass
class _Run:
    hashes: npt.NDArray[np.uint64]  # sorted
    window: npt.NDArray[np.int32]
    scores: npt.NDArray[np.float32]
    preds: npt.NDArray[np.int8]
    groups: npt.NDArray[np.int16]

    @property
    def size(self) -> int:
        return int(self.hashes.size)

    def take(self, idx: npt.NDArray[np.intp]) -> _Run:
        return _Run(self.hashes[idx], self.window[idx], self.scores[idx], self.preds[idx], self.groups[idx])


def _concat(a: _Run, b: _Run) -> _Run:
    r = _Run(
        *(np.concatenate([getattr(a, f), getattr(b, f)]) for f in ("hashes", "window", "scores", "preds", "groups"))
    )
    return r.take(np.argsort(r.hashes, kind="stable"))


@dataclass
class Matches:
    """Rows found for a list of label hashes (``found`` aligned with the query; the rest only for found rows)."""

    found: npt.NDArray[np.bool_]
    windows: list[str]  # window key per found row
    scores: npt.NDArray[np.float32]
    preds: npt.NDArray[np.int8]
    groups: npt.NDArray[np.int16]


class JoinIndex:
    """Per-deployment index of live predictions (see module docstring)."""

    def __init__(self) -> None:
        self._runs: list[_Run] = []
        self._window_ids: dict[str, int] = {}
        self._window_keys: list[str] = []

    @property
    def rows(self) -> int:
        return sum(r.size for r in self._runs)

    def _wid(self, key: str) -> int:
        wid = self._window_ids.get(key)
        if wid is None:
            wid = len(self._window_keys)
            self._window_ids[key] = wid
            self._window_keys.append(key)
        return wid

    def add(self, window: str, cols: BatchColumns) -> None:
        order = np.argsort(cols.hashes, kind="stable")
        run = _Run(cols.hashes, np.full(cols.hashes.size, self._wid(window), dtype=np.int32), cols.scores,
                   cols.preds, cols.groups).take(order)  # fmt: skip
        self._runs.append(run)
        while len(self._runs) > 1 and self._runs[-1].size * 2 >= self._runs[-2].size:
            b, a = self._runs.pop(), self._runs.pop()
            self._runs.append(_concat(a, b))

    def lookup(self, hashes: npt.NDArray[np.uint64]) -> Matches:
        found = np.zeros(hashes.size, dtype=bool)
        wid = np.full(hashes.size, -1, dtype=np.int32)
        scores = np.full(hashes.size, np.nan, dtype=np.float32)
        preds = np.full(hashes.size, -1, dtype=np.int8)
        groups = np.full(hashes.size, -1, dtype=np.int16)
        for run in reversed(self._runs):  # newest first; a loop over runs (O(log n)), not rows
            if not run.size:
                continue
            pos = np.minimum(np.searchsorted(run.hashes, hashes), run.size - 1)
            hit = (run.hashes[pos] == hashes) & ~found
            p = pos[hit]
            wid[hit], scores[hit], preds[hit], groups[hit] = run.window[p], run.scores[p], run.preds[p], run.groups[p]
            found |= hit
        keys = [self._window_keys[i] for i in wid[found].tolist()]
        return Matches(found, keys, scores[found], preds[found], groups[found])

    def drop_windows(self, keys: set[str]) -> None:
        """Forget the rows of expired windows."""
        ids = np.array([self._window_ids[k] for k in keys if k in self._window_ids], dtype=np.int32)
        if not ids.size:
            return
        self._runs = [r.take(np.flatnonzero(~np.isin(r.window, ids))) for r in self._runs]
        self._runs = [r for r in self._runs if r.size]


def encode_batch(window: str, cols: BatchColumns) -> bytes:
    """The ``joins`` table value of one batch."""
    return orjson.dumps(
        {
            "window": window,
            "hashes": encode_array(cols.hashes.view(np.int64)),
            "scores": encode_array(cols.scores.astype(np.float32)),
            "preds": encode_array(cols.preds.astype(np.int64)),
            "groups": encode_array(cols.groups.astype(np.int64)),
        }
    )


def decode_batch(data: bytes) -> tuple[str, BatchColumns]:
    d = orjson.loads(data)
    cols = BatchColumns(
        decode_array(d["hashes"], dtype=np.int64, name="hashes").view(np.uint64),
        decode_array(d["scores"], dtype=np.float32, name="scores"),
        decode_array(d["preds"], dtype=np.int8, name="preds"),
        decode_array(d["groups"], dtype=np.int16, name="groups"),
    )
    return str(d["window"]), cols
