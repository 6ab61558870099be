"""The serving gateway's parts that are not HTTP: model cache, traffic routing and input checks.

* Models are loaded by artifact digest from the content-addressed store (which verifies the bytes on read), parsed
  by the pickle-free model formats (``vigil.linear/v1`` JSON, or an ONNX graph with one onnxruntime session) and
  kept in an LRU cache in memory. A load runs in a worker thread, once per digest even under concurrent requests.
* Routing is per request: with a request key, a stable hash puts the key in one of 10 000 buckets and the
  candidate gets buckets ``[0, weight × 100)`` — so a key keeps its version while the weight only grows (10 % →
  50 % moves new keys to the candidate, never one back). Without a key, a random bucket.
* Inputs are rows of named numeric features. Unknown or missing features, non-numbers, nulls, NaN and ±inf are
  refused with the row and feature named; linear models have no notion of a missing value. The feature names and
  element types are the model's own (an ONNX graph's are read from its inputs and metadata, never from the
  request); a value the model's type cannot hold (a fraction for an int64 input, float32 overflow) is refused too.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import operator
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from vigil.artifacts import ArtifactStore
from vigil.modelformat import Model, load_model
from vigil.modelformat.onnxgraph import MAX_BYTES as ONNX_MAX_BYTES

BUCKETS = 10_000
Variant = Literal["stable", "candidate"]


class InputError(ValueError):
    """A request the model cannot answer (message names the row and feature; safe to return)."""


class TooLarge(InputError):
    """More rows than the gateway takes in one request: the request's size, not the routed version's doing."""


class ModelCache:
    """Digest → loaded model, LRU-bounded; loads are verified by the artifact store."""

    def __init__(
        self, store: ArtifactStore, max_models: int = 32, *, onnx_threads: int = 1, onnx_max_bytes: int = ONNX_MAX_BYTES
    ) -> None:
        self.store = store
        self.max_models = max_models
        self.onnx_threads = onnx_threads
        self.onnx_max_bytes = onnx_max_bytes
        self._models: OrderedDict[str, Model] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Model]] = {}

    def cached(self, digest: str) -> Model | None:
        model = self._models.get(digest)
        if model is not None:
            self._models.move_to_end(digest)
        return model

    async def get(self, digest: str) -> Model:
        """The model with this artifact digest (loaded once; concurrent callers share the load)."""
        model = self.cached(digest)
        if model is not None:
            return model
        pending = self._loading.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Model] = asyncio.get_running_loop().create_future()
        self._loading[digest] = future
        try:
            model = await asyncio.to_thread(self._load, digest)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            self._loading.pop(digest, None)
        future.set_result(model)
        self._models[digest] = model
        while len(self._models) > self.max_models:
            self._models.popitem(last=False)
        return model

    def _load(self, digest: str) -> Model:
        return load_model(self.store.get(digest), onnx_max_bytes=self.onnx_max_bytes, onnx_threads=self.onnx_threads)

    async def warm(self, digest: str) -> None:
        """Load the model and make one smoke prediction (a linear model's training mean, zeros for ONNX)."""
        model = await self.get(digest)
        _, smoke = model.run(model.smoke_input())
        if smoke.shape != (1,) or not np.all(np.isfinite(smoke)):
            raise ValueError("smoke prediction is not a finite number")


def bucket_of(deployment: str, key: str) -> int:
    """Stable bucket in ``[0, BUCKETS)`` for a request key (same on every replica and across restarts)."""
    digest = hashlib.blake2b(f"{deployment}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def choose_variant(deployment: str, weight: int, key: str | None, rng: random.Random | None = None) -> Variant:
    """``candidate`` for ``weight`` percent of requests (sticky by ``key``), ``stable`` for the rest."""
    if weight <= 0:
        return "stable"
    if weight >= 100:
        return "candidate"
    bucket = bucket_of(deployment, key) if key is not None else (rng or random).randrange(BUCKETS)
    return "candidate" if bucket < weight * (BUCKETS // 100) else "stable"


_NUMBER_TYPES = frozenset({float, int})


@functools.lru_cache(maxsize=256)
def _getter(feature_names: tuple[str, ...]) -> Callable[[Mapping[str, object]], tuple[object, ...]]:
    """A row's values in the model's feature order, looked up in C (a tuple, for one feature too)."""
    if len(feature_names) == 1:
        name = feature_names[0]
        return lambda row: (row[name],)
    return operator.itemgetter(*feature_names)


def rows_to_matrix(
    feature_names: Sequence[str],
    rows: Sequence[Mapping[str, object]],
    *,
    max_rows: int,
    extra: frozenset[str] = frozenset(),
) -> npt.NDArray[np.float64]:
    """Rows of ``{feature: number}`` → float64 matrix in the model's feature order; InputError on anything off.

    ``extra``: other keys a row may carry and the matrix leaves out (the deployment's logged attributes,
    :mod:`vigil.deployer.attributes`); any other key is refused as an unknown feature."""
    if not rows:
        raise InputError("no rows to predict")
    if len(rows) > max_rows:
        raise TooLarge(f"batch of {len(rows)} rows exceeds the limit of {max_rows}")
    expected = set(feature_names)
    # Fast path: every row has exactly the model's features (and, with ``extra``, some of those keys) and every
    # value is a plain int/float; one C-level conversion and one vectorised finiteness check. Anything else falls
    # through to the row-by-row path below, which finds the first offending row and names it.
    allowed = expected | extra if extra else expected
    if (
        all(row.keys() == expected for row in rows)
        if not extra
        else all(expected <= row.keys() <= allowed for row in rows)
    ):
        values = [v for row in map(_getter(tuple(feature_names)), rows) for v in row]
        if set(map(type, values)) <= _NUMBER_TYPES:
            fast = np.array(values, dtype=np.float64).reshape(len(rows), len(feature_names))
            if np.isfinite(fast).all():
                return fast
    out = np.empty((len(rows), len(feature_names)), dtype=np.float64)
    for i, row in enumerate(rows):
        if not expected <= row.keys() <= allowed:
            keys = set(row)
            missing, unknown = sorted(expected - keys), sorted(keys - allowed)
            parts = []
            if missing:
                parts.append(f"missing features {missing[:10]}")
            if unknown:
                parts.append(f"unknown features {unknown[:10]}")
            raise InputError(f"row {i}: " + "; ".join(parts))
        for j, name in enumerate(feature_names):
            value = row[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(f"row {i}: feature {name!r} must be a number, got {type(value).__name__}")
            if not math.isfinite(value):
                raise InputError(f"row {i}: feature {name!r} must be finite, got {value}")
            out[i, j] = value
    return out


def columns_to_matrix(
    feature_names: Sequence[str],
    columns: Mapping[str, Sequence[object]],
    *,
    max_rows: int,
    extra: frozenset[str] = frozenset(),
) -> npt.NDArray[np.float64]:
    """Column-major input ``{feature: [values…]}`` → matrix; the same checks as :func:`rows_to_matrix` (``extra``
    columns are left out of the matrix, and must be as long as the features')."""
    expected = set(feature_names)
    if columns.keys() != expected and not expected <= columns.keys() <= expected | extra:
        missing, unknown = sorted(expected - set(columns)), sorted(set(columns) - expected - extra)
        parts = [f"missing features {missing[:10]}"] if missing else []
        parts += [f"unknown features {unknown[:10]}"] if unknown else []
        raise InputError("; ".join(parts))
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise InputError("columns have different lengths")
    n = lengths.pop()
    if n == 0:
        raise InputError("no rows to predict")
    if n > max_rows:
        raise TooLarge(f"batch of {n} rows exceeds the limit of {max_rows}")
    out = np.empty((n, len(feature_names)), dtype=np.float64)
    for j, name in enumerate(feature_names):
        column = columns[name]
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in column):
            raise InputError(f"feature {name!r}: every value must be a number (null is not allowed)")
        out[:, j] = np.asarray(column, dtype=np.float64)
        if not np.all(np.isfinite(out[:, j])):
            bad = int(np.flatnonzero(~np.isfinite(out[:, j]))[0])
            raise InputError(f"row {bad}: feature {name!r} must be finite")
    return out
