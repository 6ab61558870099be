"""Which p-value goes with which fairness gap, read off a window's ``fairness`` figures (:meth:`GroupRates.metrics`
in :mod:`vigil.kernels.fairness` writes them).

A module of its own, with no numpy or numba, because two judges read it: the monitor's rule and the console, which
shows the same verdict and must not pull the numeric stack into its process to do so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def gap_p_value(fairness: Mapping[str, Any], gap: str, limit: float) -> float | None:
    """The p-value of ``gap`` (``demographic_parity_difference`` or ``equalized_odds_difference``), None for figures
    kept before the test existed (then the gap alone is judged). Equalized odds is the larger of the TPR and FPR gaps:
    its p-value is the smallest of theirs among those past ``limit``."""
    if gap == "demographic_parity_difference":
        p = fairness.get("demographic_parity_p_value")
        return float(p) if p is not None else None
    parts = [fairness.get(f"{part}_p_value") for part in ("tpr_gap", "fpr_gap") if (fairness.get(part) or 0) > limit]
    known = [float(p) for p in parts if p is not None]
    return min(known) if known else None
