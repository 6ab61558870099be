"""The label join: prediction id → (window, score, predicted class, group), kept compact and searchable.

Labels arrive later (minutes to hours) with only a prediction id. Per deployment the monitor keeps, for every
prediction still inside the label horizon, 15 bytes: a stable 64-bit hash of its id, its score (float32), predicted
class (int8) and sensitive-attribute group (int16), plus which window it belongs to. Rows live in sorted runs
merged log-structured style (a new batch is a run; runs of similar size merge), so adding is amortised
O(log n) per row and a lookup is a binary search per run — no Python loop over rows, no dict of millions of
strings. A 64-bit hash collision would join a label to the wrong prediction; with 10⁸ live rows the chance of any
collision is ~3·10⁻⁴ — accepted and documented.

Persistence: each batch's columns are also a ``join_batches`` row in Postgres, written in the transaction that
folds the batch into its window; the in-memory index is a cache of those rows, loaded incrementally per deployment
(window_store.py), so another instance's batches and a restart are seen alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from vigil.kernels.encoding import decode_array, encode_array
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
    """Every indexed row a list of label hashes matched. ``found`` is aligned with the query; the other fields have
    one entry per match, and ``rows`` names the query position of each. A prediction id can match more than once:
    a mirrored (shadow) request logs the same ids as the primary answer, and both answers are judged."""

    found: npt.NDArray[np.bool_]
    rows: npt.NDArray[np.intp]  # query position per match
    windows: list[str]  # window key per match
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
        """All rows whose hash is in ``hashes`` — in every window (a shadow's copy as well as the primary's), but
        each (label, window) pair once (a batch logged twice under two event ids is not credited twice)."""
        q_parts: list[npt.NDArray[np.intp]] = []
        pos_parts: list[tuple[_Run, npt.NDArray[np.intp]]] = []
        for run in self._runs:  # a loop over runs (O(log n)), not rows
            if not run.size:
                continue
            lo = np.searchsorted(run.hashes, hashes, "left")
            n = np.searchsorted(run.hashes, hashes, "right") - lo
            total = int(n.sum())
            if not total:
                continue
            q = np.repeat(np.arange(hashes.size), n)
            pos = np.repeat(lo, n) + (np.arange(total) - np.repeat(np.cumsum(n) - n, n))
            q_parts.append(q)
            pos_parts.append((run, pos))
        if not q_parts:
            empty = np.zeros(0, dtype=np.intp)
            return Matches(np.zeros(hashes.size, dtype=bool), empty, [], np.zeros(0, np.float32),
                           np.zeros(0, np.int8), np.zeros(0, np.int16))  # fmt: skip
        rows = np.concatenate(q_parts)
        wid = np.concatenate([r.window[p] for r, p in pos_parts]).astype(np.int64)
        scores = np.concatenate([r.scores[p] for r, p in pos_parts])
        preds = np.concatenate([r.preds[p] for r, p in pos_parts])
        groups = np.concatenate([r.groups[p] for r, p in pos_parts])
        _, first = np.unique(rows.astype(np.int64) * (len(self._window_keys) + 1) + wid, return_index=True)
        first.sort()
        rows, wid, scores, preds, groups = rows[first], wid[first], scores[first], preds[first], groups[first]
        found = np.zeros(hashes.size, dtype=bool)
        found[rows] = True
        keys = [self._window_keys[i] for i in wid.tolist()]
        return Matches(found, rows, keys, scores, preds, groups)

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
