"""Multivariate drift and out-of-distribution rows per window: the PCA reference a version's profile carries, the
fold of a batch's numeric rows into the window's reconstruction-error state and OOD counts, and their figures.

Why here and not in ingest.py: like the label-free estimate (estimates.py), this block has its own input (the
profile's ``multivariate`` entry, which only profiles built since #21 have) and its own output (``multivariate`` in
the figures and the ``monitor.window`` event).

Per batch: the feature matrix ingest.py already built for the per-feature bins goes through two jitted ``nogil``
row passes of the kernels (:mod:`vigil.kernels.multivariate`): the reconstruction error (distance to the kept PCA
axes), shared by the drift state and the OOD rule, and the Mahalanobis distance on the kept axes. No Python loop
over rows. The window state is a handful of numbers (rows, Σ error, Σ error², imputed values; rows, OOD rows), so it
merges across batches, partitions and into the rolling window exactly.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.kernels.multivariate import ReconstructionState, _norms
from vigil.kernels.ood import OODReference, OODState
from vigil.kernels.profile import DatasetProfile
from vigil.monitor.state import WindowState

log = logging.getLogger(__name__)


def parse_multivariate(body: Any, reference: DatasetProfile | None) -> OODReference | None:
    """The PCA reference + OOD thresholds of a profile body, or None: absent (older profiles), unusable, or fitted on
    other numeric columns than the profile's (logged)."""
    if not isinstance(body, dict) or body.get("multivariate") is None:
        return None
    if reference is None or reference.numeric is None:
        return None
    try:
        ood = OODReference.from_dict(body["multivariate"])
    except (ValueError, TypeError, KeyError) as exc:
        log.error("unusable multivariate reference in profile", extra={"error": repr(exc)})
        return None
    if tuple(ood.pca.names) != tuple(reference.numeric.names):
        log.error("multivariate reference columns differ from the profile's numeric features")
        return None
    return ood


def fold_multivariate(
    st: WindowState, x: npt.NDArray[np.float64], ref: OODReference | None, logged: list[bool] | None = None
) -> None:
    """Fold a batch's numeric rows (columns in the reference's order) into the window's PCA-error and OOD states.
    ``logged``: the gateway's per-row OOD flags (``prediction.logged`` ``ood``, the same reference's rule), counted
    instead of recomputed; events without them are scored here."""
    if ref is None or x.shape[0] == 0:
        return
    pca = ref.pca
    errors, imputed = pca.row_errors(x)
    if logged is not None and len(logged) == errors.size:
        flagged = sum(logged)
    else:
        maha, _ = _norms(x, pca.mean, ref._kept)
        flagged = int(np.count_nonzero((maha > ref.mahalanobis_threshold) | (errors > ref.error_threshold)))
    rec = st.reconstruction if st.reconstruction is not None else ReconstructionState()
    rec.count += int(errors.size)
    rec.total += float(errors.sum())
    rec.total_sq += float(errors @ errors)
    rec.imputed += imputed
    st.reconstruction = rec
    ood = st.ood if st.ood is not None else OODState()
    ood.count += int(errors.size)
    ood.flagged += flagged
    st.ood = ood


def _f(v: Any) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def multivariate_figures(st: WindowState, ref: OODReference | None) -> dict[str, Any] | None:
    """The ``multivariate`` block of a window's figures: mean reconstruction error, its ±3σ band for this many rows
    and whether it lies outside, and the share of out-of-distribution rows beside the reference's own share."""
    rec, ood = st.reconstruction, st.ood
    if ref is None or rec is None or rec.count == 0:
        return None
    judged = rec.judge(ref.pca)
    flagged = ood.flagged if ood is not None else 0
    counted = ood.count if ood is not None else 0
    return {
        "count": rec.count,
        "error": _f(judged["error"]),
        "lower": _f(judged["lower"]),
        "upper": _f(judged["upper"]),
        "reference_error": _f(ref.pca.error_mean),
        "drifted": bool(judged["drifted"]),
        "imputed": int(rec.imputed),
        "components": int(ref.pca.n_components),
        "ood_count": counted,
        "ood_flagged": flagged,
        "ood_share": flagged / counted if counted else None,
        "ood_reference_share": _f(ref.reference_share),
    }
