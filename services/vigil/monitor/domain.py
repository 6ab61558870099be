"""The domain classifier's second opinion on a closed window: can a model tell the window's rows from the reference's?

Why: the PCA reconstruction error (multivariate.py) sees changes in how features move together only when they
leave the reference's linear subspace. A small gradient-boosted tree model trained to separate window rows from
reference rows (:func:`vigil.kernels.multivariate.domain_classifier_auroc`, cross-fitted) sees non-linear changes
too; its out-of-fold AUROC is 0.5 when the two are indistinguishable. Fitting it costs ~0.4 s per window, so it is
run once per closed tumbling window, never per batch, and off the event loop.

Its inputs:

- the reference side is the seeded uniform sample of reference rows the version's PCA reference carries
  (``multivariate.sample``, numeric features in raw units, built by the trainer);
- the window side is a bounded uniform sample of the window's numeric rows, kept in the window state as it is
  folded batch by batch (:class:`vigil.kernels.reservoir.RowReservoir`: the rows whose hashed prediction ids are
  smallest — the same rows whatever the batching, redeliveries or merges).

Either sample smaller than :data:`MIN_ROWS` gives ``auroc: null`` with the reason, never a 0.5 that looks measured.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.kernels.multivariate import domain_classifier_auroc
from vigil.kernels.ood import OODReference
from vigil.kernels.reservoir import RowReservoir
from vigil.monitor.state import WindowState

log = logging.getLogger(__name__)

#: Window rows kept for the classifier. 1 000 × 20 features is 80 kB of float32 in the state, rewritten per batch.
SAMPLE_ROWS = 1000
#: Seed of the sample's priorities (fixed: a window's sample must not depend on which instance folded it).
SAMPLE_SEED = 21
#: Fewer rows than this on either side: no figure (the AUROC of a few dozen rows is mostly noise).
MIN_ROWS = 100
#: Cross-fitting folds, and the verdict: AUROC above :data:`MIN_AUROC` and ``N_SIGMA`` null deviations above 0.5.
FOLDS = 3
MIN_AUROC = 0.55
N_SIGMA = 3.0
#: Classifier results kept per closer (revisions of a window reuse the first close's result).
_CACHE = 1024


def fold_sample(
    st: WindowState, x: npt.NDArray[np.float64], keys: npt.NDArray[np.uint64], ref: OODReference | None, rows: int
) -> None:
    """Offer a batch's numeric rows (the reference's column order) to the window's sample, named by their prediction
    ids' hashes. Nothing is kept without a reference row sample to compare with, or with ``rows`` = 0."""
    if ref is None or rows <= 0 or ref.pca.sample.shape[0] == 0 or x.shape[0] == 0:
        return
    if st.sample is None or st.sample.n_features != x.shape[1]:
        st.sample = RowReservoir(rows, x.shape[1], seed=SAMPLE_SEED)
    st.sample.update(x, keys)


def _unavailable(reason: str, n_reference: int, sample: RowReservoir | None) -> dict[str, Any]:
    return {
        "auroc": None,
        "null_sd": None,
        "z": None,
        "lower": None,
        "upper": None,
        "drifted": None,
        "n_reference": n_reference,
        "n_window": sample.size if sample is not None else 0,
        "window_rows": sample.seen if sample is not None else 0,
        "reason": reason,
    }


def domain_figures(reference_sample: npt.NDArray[np.float64], sample: RowReservoir | None) -> dict[str, Any]:
    """The ``domain_classifier`` block of a window's multivariate figures: out-of-fold AUROC, its spread under no
    drift (``null_sd``, Mann–Whitney), ``z``, the ±3σ band around 0.5 and the verdict — or nulls and a reason."""
    m = int(reference_sample.shape[0])
    if m < MIN_ROWS:
        return _unavailable(f"the reference carries {m} sample rows (fewer than {MIN_ROWS})", m, sample)
    if sample is None or sample.size < MIN_ROWS:
        n = 0 if sample is None else sample.size
        return _unavailable(f"the window's sample has {n} rows (fewer than {MIN_ROWS})", m, sample)
    if sample.n_features != reference_sample.shape[1]:
        return _unavailable("the window's sample and the reference differ in features", m, sample)
    # Both sides at the sample's float32 precision: a rounding difference must not be something to learn.
    ref32 = reference_sample.astype(np.float32).astype(np.float64)
    try:
        r = domain_classifier_auroc(ref32, sample.sample(), folds=FOLDS, seed=0)
    except ValueError as exc:
        return _unavailable(f"classifier not fitted: {exc}", m, sample)
    half = N_SIGMA * r.null_sd
    return {
        "auroc": r.auroc,
        "null_sd": r.null_sd,
        "z": r.z,
        "lower": max(0.0, 0.5 - half),
        "upper": min(1.0, 0.5 + half),
        "drifted": bool(r.drifted(MIN_AUROC, N_SIGMA)),
        "n_reference": r.n_reference,
        "n_window": r.n_window,
        "window_rows": sample.seen,
        "reason": None,
    }


def _fingerprint(key: str, ref: OODReference, sample: RowReservoir | None) -> tuple[str, str]:
    """What a window's result depends on: its key, the reference's sample and the window's sample."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(np.ascontiguousarray(ref.pca.sample).tobytes())
    if sample is not None:
        digest.update(sample.priority.tobytes())
        digest.update(str(sample.seen).encode())
    return key, digest.hexdigest()


class DomainOpinions:
    """Runs the classifier for the closer: one at a time on a worker thread of its own, results cached by input.

    One thread: the kernel caps OpenMP at one thread process-wide while it fits, a cap two concurrent fits would
    undo for each other; and one core at most goes to these fits while the event loop keeps consuming. The cache
    lets the closer compute before it takes the engine's lock (:meth:`prepare`) and lets a revised window (late
    labels, same rows) reuse its first close's result.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-domain")
        self._done: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    async def figures(self, st: WindowState, ref: OODReference | None) -> dict[str, Any] | None:
        """The window's ``domain_classifier`` figures (None without a PCA reference: no multivariate block)."""
        if ref is None:
            return None
        fp = _fingerprint(st.key, ref, st.sample)
        hit = self._done.get(fp)
        if hit is not None:
            self._done.move_to_end(fp)
            return hit
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, domain_figures, ref.pca.sample, st.sample)
        except Exception as exc:  # never block a window's close: say why the figure is missing
            log.exception("domain classifier failed", extra={"window": st.key})
            result = _unavailable(f"classifier failed: {type(exc).__name__}", int(ref.pca.sample.shape[0]), st.sample)
        self._done[fp] = result
        while len(self._done) > _CACHE:
            self._done.popitem(last=False)
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
