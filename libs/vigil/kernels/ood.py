"""Per-request out-of-distribution score: how unlike the training data one input row is.

Why: a window's drift figures say the population moved; they do not say which requests the model is guessing on.
A per-row score, logged with each prediction, lets the monitor report the share of inputs unlike anything seen in
training — the case where any estimate of performance (CBPE included) is least trustworthy.

Two scores per row, both in the reference's PCA space (:class:`vigil.kernels.multivariate.PCAReference`):

- **Mahalanobis distance on the kept axes**: ``sqrt(Σ_{j<k} s_j² / λ_j)`` with ``s_j`` the row's standardised
  coordinate on axis ``j`` and ``λ_j`` that axis's reference variance — far out *along* the directions the
  reference varies in.
- **Reconstruction error**: the distance to the kept subspace (``sqrt(Σ_{j≥k} s_j²)``) — off the reference's
  correlation structure, where a Mahalanobis distance on the kept axes is blind.

A row is out of distribution when either score exceeds its threshold, the reference's ``quantile`` (default 0.995)
of that score. Each score is one jitted pass over the batch (centring, scaling and the 1/√λ weights fold into one
small matrix per score). ``reference_share`` is the share of reference rows flagged by the same rule (≈ 1 % at the
default: two 0.5 % tails, fewer where they overlap), the baseline a window's share is compared with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.kernels._common import F64Array
from vigil.kernels.multivariate import PCAReference, _norms, _rows

__all__ = ["DEFAULT_OOD_QUANTILE", "OODReference", "OODState", "fit_ood"]

DEFAULT_OOD_QUANTILE = 0.995
_MIN_VARIANCE = 1e-12  # a kept axis with (numerically) zero reference variance: distances along it are not scaled up


@dataclass(frozen=True)
class OODReference:
    """Thresholds of both per-row scores over the reference, with the PCA they are measured in."""

    pca: PCAReference
    quantile: float
    mahalanobis_threshold: float
    error_threshold: float
    reference_share: float
    _kept: F64Array = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.quantile < 1:
            raise ValueError("quantile must be in (0, 1)")
        p = self.pca
        k = p.n_components
        weights = 1.0 / np.sqrt(np.maximum(p.eigenvalues[:k], _MIN_VARIANCE))
        kept = (p.axes[:k] * weights[:, None]) / p.scale  # (k, d): x ↦ kept·(x − μ)
        object.__setattr__(self, "_kept", np.ascontiguousarray(kept))

    def scores(self, x: npt.ArrayLike) -> tuple[F64Array, F64Array]:
        """Each row's Mahalanobis distance on the kept axes and its reconstruction error. Non-finite values are
        imputed with the reference mean (so a row of NaN scores 0: missingness is the data-quality checks' job)."""
        a = _rows(np.asarray(x).reshape(1, -1) if np.ndim(x) == 1 else x, self.pca.n_features)
        maha, _ = _norms(a, self.pca.mean, self._kept)
        err, _ = self.pca.row_errors(a)
        return maha, err

    def flags(self, x: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """True for rows out of distribution: either score above its reference threshold."""
        maha, err = self.scores(x)
        return np.asarray((maha > self.mahalanobis_threshold) | (err > self.error_threshold))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "vigil.ood_reference",
            "version": 1,
            "pca": self.pca.to_dict(),
            "quantile": self.quantile,
            "mahalanobis_threshold": self.mahalanobis_threshold,
            "error_threshold": self.error_threshold,
            "reference_share": self.reference_share,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OODReference:
        if data.get("format") != "vigil.ood_reference" or data.get("version") != 1:
            raise ValueError("not a vigil OOD reference (format/version)")
        values = [float(data[k]) for k in ("mahalanobis_threshold", "error_threshold", "reference_share")]
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError("thresholds must be finite and non-negative")
        return cls(PCAReference.from_dict(data["pca"]), float(data["quantile"]), *values)


def fit_ood(pca: PCAReference, x: npt.ArrayLike, *, quantile: float = DEFAULT_OOD_QUANTILE) -> OODReference:
    """Thresholds at the ``quantile`` of each score over reference rows ``x`` (the rows ``pca`` was fitted on, or a
    held-out part of the training data — held-out rows give thresholds that do not flatter the fit)."""
    draft = OODReference(pca, quantile, math.inf, math.inf, 0.0)
    maha, err = draft.scores(x)
    if maha.size == 0:
        raise ValueError("need reference rows")
    t_maha = float(np.quantile(maha, quantile))
    t_err = float(np.quantile(err, quantile))
    share = float(np.mean((maha > t_maha) | (err > t_err)))
    return OODReference(pca, quantile, t_maha, t_err, share)


@dataclass
class OODState:
    """A window's count of rows and of out-of-distribution rows. Merges exactly."""

    count: int = 0
    flagged: int = 0

    def update(self, reference: OODReference, x: npt.ArrayLike) -> OODState:
        f = reference.flags(x)
        self.count += int(f.size)
        self.flagged += int(f.sum())
        return self

    def merge(self, other: OODState) -> OODState:
        return OODState(self.count + other.count, self.flagged + other.flagged)

    @property
    def share(self) -> float:
        return self.flagged / self.count if self.count else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "flagged": self.flagged}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OODState:
        return cls(int(data["count"]), int(data["flagged"]))
