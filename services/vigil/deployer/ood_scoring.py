"""Per-request out-of-distribution scores: each answered row's distance from the version's training data.

Why in the gateway: the monitor can count unusual rows per window, but only the request knows *which* prediction
was made on an input unlike anything seen in training — the case where the model, and any label-free estimate of
its performance, is least trustworthy. So each row's flag travels with its prediction in ``prediction.logged``
(``ood``, ``ood_scores``), the predict route returns the flag, and the monitor counts the logged flags instead of
recomputing them.

The rule is the kernels' (:class:`vigil.kernels.ood.OODReference`): a row is out of distribution when its
Mahalanobis distance on the reference's kept PCA axes, or its reconstruction error (distance to the kept
subspace), exceeds that score's reference quantile (0.995). The reference comes from the version's reference profile
(its ``multivariate`` entry, written by the trainer), read once per version from the ``model.version.registered``
event the deployer stored (inline, or from the artifact store by digest when the profile was too large to travel
inline). A version without one is served as before: no scores, no error.

Cost: one jitted ``nogil`` pass over the request's rows (:func:`_score_rows`) — the column gather from the model's
feature order, standardisation and both projections in one read of each value, no temporaries, no Python per row.
The projections are laid out once per version (:class:`OODScorer`), not per request.

``ood_scores`` is the row's larger score as a multiple of its threshold, ``max(d_M / t_M, e / t_e)``: above 1 means
beyond the reference's 0.995 quantile on at least one score (the ``ood`` flag is the rule itself; the two agree
except at a zero threshold). Non-finite scores (inputs so large their squares overflow) are flagged and capped at
:data:`SCORE_CAP`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt
import orjson
from numba import njit

from vigil.artifacts import ArtifactError, ArtifactStore
from vigil.deployer import store
from vigil.kernels.ood import OODReference

log = logging.getLogger(__name__)

__all__ = ["SCORE_CAP", "OODReferences", "OODScorer", "RowScores", "scorer_for"]

#: Largest logged score (the schema takes finite numbers only; a row this far out is flagged either way).
SCORE_CAP = 1e12
#: Decimals of a logged score: enough to read a distance, fewer bytes per row on the wire.
SCORE_DECIMALS = 4
#: A kept axis with (numerically) zero reference variance is not scaled up (as the kernel does).
_MIN_VARIANCE = 1e-12
#: fast-math for the dot products only (finite values there); the finiteness tests run without it.
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

F64 = npt.NDArray[np.float64]
Flags = npt.NDArray[np.bool_]


@njit("float64(float64[::1], float64[:, ::1], int64, int64)", cache=True, nogil=True, fastmath=_FASTMATH)
def _sum_sq_dots(z, proj, lo, hi):  # type: ignore[no-untyped-def]
    """``Σ_{lo≤j<hi} (z · proj[j])²``."""
    total = 0.0
    for j in range(lo, hi):
        s = 0.0
        for f in range(z.size):
            s += z[f] * proj[j, f]
        total += s * s
    return total


@njit(
    "void(float64[:, :], int64[::1], float64[::1], float64[::1], float64[:, ::1], int64, float64, float64,"
    " float64, float64[::1], boolean[::1])",
    cache=True,
    nogil=True,
)
def _score_rows(x, columns, mean, inv_scale, proj, k, t_maha, t_err, cap, out_score, out_flag):  # type: ignore[no-untyped-def]
    """Per row ``i``: ``z = (x[i, columns] − μ) / σ`` (non-finite values taken as the mean), Mahalanobis distance
    ``‖proj[:k] z‖`` (rows pre-scaled by 1/√λ) and reconstruction error ``‖proj[k:] z‖``; the flag is either above
    its threshold, the score the larger as a multiple of its threshold (capped; a non-finite one counts as cap)."""
    d = columns.size
    m = proj.shape[0]
    z = np.empty(d)
    for i in range(x.shape[0]):
        for f in range(d):
            v = x[i, columns[f]]
            z[f] = (v - mean[f]) * inv_scale[f] if np.isfinite(v) else 0.0
        maha = np.sqrt(_sum_sq_dots(z, proj, 0, k))
        err = np.sqrt(_sum_sq_dots(z, proj, k, m))
        if not (np.isfinite(maha) and np.isfinite(err)):
            out_flag[i] = True
            out_score[i] = cap
            continue
        out_flag[i] = maha > t_maha or err > t_err
        r_maha = maha / t_maha if t_maha > 0 else (0.0 if maha <= 0 else cap)
        r_err = err / t_err if t_err > 0 else (0.0 if err <= 0 else cap)
        out_score[i] = min(max(r_maha, r_err), cap)


@dataclass(frozen=True)
class RowScores:
    """One request's rows: ``scores`` (multiples of the threshold, see the module docstring) and ``flags``."""

    scores: F64
    flags: Flags

    def logged_scores(self) -> list[float]:
        """The scores as the event carries them (rounded to :data:`SCORE_DECIMALS`)."""
        out: list[float] = np.round(self.scores, SCORE_DECIMALS).tolist()
        return out


@dataclass(frozen=True)
class OODScorer:
    """One version's OOD rule laid out for its model's input matrix (columns in the model's feature order)."""

    reference: OODReference
    columns: npt.NDArray[np.int64]  # model column of each reference feature
    mean: F64
    inv_scale: F64
    proj: F64  # (d, d): kept axes / √λ, then the residual axes (standardised space)
    k: int

    def score(self, matrix: npt.NDArray[Any]) -> RowScores:
        """Score every row of ``matrix`` (rows × the model's features) in one pass."""
        n = matrix.shape[0]
        scores = np.empty(n)
        flags = np.empty(n, dtype=np.bool_)
        x = matrix if matrix.dtype == np.float64 else matrix.astype(np.float64)
        ref = self.reference
        _score_rows(
            x,
            self.columns,
            self.mean,
            self.inv_scale,
            self.proj,
            self.k,
            ref.mahalanobis_threshold,
            ref.error_threshold,
            SCORE_CAP,
            scores,
            flags,
        )
        return RowScores(scores, flags)


def scorer_for(reference: OODReference, feature_names: Sequence[str]) -> OODScorer | None:
    """``reference`` laid out for a model with these input features; None when the model lacks one of the
    reference's features (a profile fitted on other columns cannot judge this model's rows)."""
    pca = reference.pca
    index = {name: j for j, name in enumerate(feature_names)}
    if any(name not in index for name in pca.names):
        return None
    k = pca.n_components
    weights = 1.0 / np.sqrt(np.maximum(pca.eigenvalues[:k], _MIN_VARIANCE))
    proj = np.concatenate([pca.axes[:k] * weights[:, None], pca.axes[k:]])
    return OODScorer(
        reference=reference,
        columns=np.array([index[name] for name in pca.names], dtype=np.int64),
        mean=np.ascontiguousarray(pca.mean, dtype=np.float64),
        inv_scale=np.ascontiguousarray(1.0 / pca.scale, dtype=np.float64),
        proj=np.ascontiguousarray(proj, dtype=np.float64),
        k=k,
    )


Key = tuple[str, int]


class OODReferences:
    """Per served version: its :class:`OODScorer` or None, read once when the version is first served here.

    Read from the stored ``model.version.registered`` (immutable, so a found answer never goes stale). A failed
    read (Postgres or the artifact store unreachable) is served without scores and retried after ``retry_s``;
    concurrent first requests share one read."""

    def __init__(
        self, pool: asyncpg.Pool, artifacts: ArtifactStore, *, retry_s: float = 30.0, max_entries: int = 256
    ) -> None:
        self.pool = pool
        self.artifacts = artifacts
        self.retry_s = retry_s
        self.max_entries = max_entries
        self._entries: OrderedDict[Key, OODScorer | None] = OrderedDict()
        self._failed: dict[Key, float] = {}  # key → monotonic time of the failed read
        self._loading: dict[Key, asyncio.Future[OODScorer | None]] = {}

    async def scorer(self, model: str, version: int, feature_names: Sequence[str]) -> OODScorer | None:
        """The version's scorer for a model with ``feature_names`` (None: no reference, or not readable now)."""
        key = (model, version)
        try:
            return self._entries[key]
        except KeyError:
            pass
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() - failed < self.retry_s:
            return None
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[OODScorer | None] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            scorer = await self._load(model, version, feature_names)
        except Exception as exc:  # serving goes on without scores; the read is retried later
            log.warning(
                "OOD reference not readable now", extra={"model": model, "version": version, "error": repr(exc)}
            )
            self._failed[key] = time.monotonic()
            scorer = None
        else:
            self._failed.pop(key, None)
            self._entries[key] = scorer
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        finally:
            self._loading.pop(key, None)
        future.set_result(scorer)
        return scorer

    async def _load(self, model: str, version: int, feature_names: Sequence[str]) -> OODScorer | None:
        async with self.pool.acquire() as conn:
            found = await store.reference_of_version(conn, model, version)
        if found is None:
            return None
        multivariate, uri, digest = found
        if multivariate is None and uri is not None:
            multivariate = await asyncio.to_thread(self._stored_entry, uri, digest)
        if multivariate is None:
            return None
        try:
            reference = OODReference.from_dict(multivariate)
        except (ValueError, TypeError, KeyError) as exc:  # a definite answer: this version has no usable reference
            log.error("unusable OOD reference", extra={"model": model, "version": version, "error": repr(exc)})
            return None
        scorer = scorer_for(reference, feature_names)
        if scorer is None:
            log.error(
                "OOD reference names features the model does not take", extra={"model": model, "version": version}
            )
        return scorer

    def _stored_entry(self, uri: str, digest: str | None) -> Any:
        """The ``multivariate`` entry of a profile stored as an artifact (digest-verified by the store)."""
        named = uri.removeprefix("vigil-artifact://")
        if digest is not None and digest != named:
            log.error("reference profile URI and digest disagree", extra={"uri": uri, "digest": digest})
            return None
        try:
            body = orjson.loads(self.artifacts.get(named))
        except orjson.JSONDecodeError:
            log.error("reference profile is not JSON", extra={"uri": uri})
            return None
        except ArtifactError:
            raise  # maybe transient (store unreachable): retried
        return body.get("multivariate") if isinstance(body, dict) else None
