"""The one place the trainer calls the kernel library to build a reference profile.

Kept behind this small function so that a change of the kernel library's API touches one line here, not the
runner. The profile format itself is owned by :mod:`vigil.kernels.profile` and is opaque to the trainer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def reference_profile_dict(features: Any, names: Sequence[str] | None) -> dict[str, Any]:
    """Reference profile (``DatasetProfile.to_dict()``) of a numeric feature matrix ``(rows, features)``."""
    import numpy as np

    from vigil.kernels.profile import DatasetProfile

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"profile features must be 2-D (rows × features), got shape {x.shape}")
    profile = DatasetProfile.build(numeric=x, numeric_names=list(names) if names is not None else None)
    return profile.to_dict()
