"""The one place the trainer calls the kernel library to build a reference profile.

Kept behind this small function so that a change of the kernel library's API touches one line here, not the
runner. The profile format itself is owned by :mod:`vigil.kernels.profile` and is opaque to the trainer.

Label-free performance estimation: when the entrypoint hands over held-out scores and labels, the profile also
carries ``"calibration"`` — the map from served score to probability that the monitor applies to every prediction
(:func:`vigil.kernels.calibration.choose_calibrator`: identity, isotonic or Platt, whichever has the lowest
cross-fitted calibration error on those rows), the decision threshold and how many rows it was fitted on. The key
sits beside the profile's own; readers that do not know it ignore it, and profiles without it keep working.

Multivariate drift and out-of-distribution rows: with at least :data:`MIN_MULTIVARIATE_ROWS` rows and two numeric
features, the profile also carries ``"multivariate"`` — the reference's PCA (standardisation, axes, cross-fitted
reconstruction-error band; :func:`vigil.kernels.multivariate.fit_pca_reference`) with the per-row OOD thresholds
fitted on the same rows (:func:`vigil.kernels.ood.fit_ood`), as ``OODReference.to_dict()``, with a seeded uniform
sample of :data:`REFERENCE_SAMPLE_ROWS` reference rows: the monitor's domain classifier tells each closed window's
rows from them (services/vigil/monitor/domain.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Fewer held-out rows than this give a calibration map too noisy to estimate anything with: none is stored.
MIN_CALIBRATION_ROWS = 50
#: Fewer reference rows than this give a PCA band (ten cross-fitted blocks, 500-row chunks) too rough to judge with.
MIN_MULTIVARIATE_ROWS = 200
#: Reference rows kept for the domain classifier. 2 000 × 20 float64 features add ~0.4 MB of base64 to the profile,
#: so a profile sent inline still fits the bus's 1 MiB event limit.
REFERENCE_SAMPLE_ROWS = 2000


def reference_profile_dict(
    features: Any,
    names: Sequence[str] | None,
    *,
    calibration_scores: Any = None,
    calibration_labels: Any = None,
    decision_threshold: float = 0.5,
) -> dict[str, Any]:
    """Reference profile (``DatasetProfile.to_dict()``) of a numeric feature matrix ``(rows, features)``, plus the
    calibration map when held-out scores and labels are given."""
    import numpy as np

    from vigil.kernels.profile import DatasetProfile

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"profile features must be 2-D (rows × features), got shape {x.shape}")
    profile = DatasetProfile.build(numeric=x, numeric_names=list(names) if names is not None else None)
    out = profile.to_dict()
    multivariate = multivariate_dict(x, profile.numeric.names if profile.numeric is not None else None)
    if multivariate is not None:
        out["multivariate"] = multivariate
    if calibration_scores is not None and calibration_labels is not None:
        cal = calibration_dict(calibration_scores, calibration_labels, decision_threshold)
        if cal is not None:
            out["calibration"] = cal
    return out


def calibration_dict(scores: Any, labels: Any, decision_threshold: float = 0.5) -> dict[str, Any] | None:
    """The profile's ``calibration`` entry, or None when the rows cannot support one (too few, one class only)."""
    import numpy as np

    from vigil.kernels.calibration import choose_calibrator

    if not 0.0 <= float(decision_threshold) <= 1.0:
        raise ValueError("decision_threshold must be in [0, 1]")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.size != y.size:
        raise ValueError(f"calibration scores ({s.size}) and labels ({y.size}) differ in length")
    ok = np.isfinite(s) & (s >= 0) & (s <= 1) & np.isin(y, (0, 1))
    s, y = s[ok], y[ok].astype(np.int64)
    if s.size < MIN_CALIBRATION_ROWS or y.min() == y.max():
        return None
    cal = choose_calibrator(s, y)
    return {**cal.to_dict(), "threshold": float(decision_threshold), "rows": int(s.size)}


def multivariate_dict(x: Any, names: Sequence[str] | None) -> dict[str, Any] | None:
    """The profile's ``multivariate`` entry (PCA reference + OOD thresholds), or None when the rows cannot support
    one (fewer than two features or :data:`MIN_MULTIVARIATE_ROWS` rows)."""
    import numpy as np

    from vigil.kernels.multivariate import fit_pca_reference
    from vigil.kernels.ood import fit_ood

    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2 or a.shape[0] < MIN_MULTIVARIATE_ROWS or names is None:
        return None
    pca = fit_pca_reference(a, tuple(names), sample_rows=REFERENCE_SAMPLE_ROWS)
    return fit_ood(pca, a).to_dict()
