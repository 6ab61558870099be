"""Group fairness gaps of a binary classifier over a sensitive attribute: demographic parity and equalized odds.

Why a streaming state: like the quality metrics, fairness is judged per window once labels arrive, merged across
windows; five counters per group are enough for both criteria (fairlearn's definitions):

- demographic parity difference = max_g P(ŷ=1 | g) − min_g P(ŷ=1 | g) (ratio: min / max);
- equalized odds difference = max(TPR gap, FPR gap), each gap = max_g − min_g over groups that have positives
  (TPR) or negatives (FPR).

Groups are integer codes in [0, n_groups); rows with a code outside it or a label/prediction not in {0, 1} are
missing. Groups without rows are left out of the gaps (their rates are NaN).

Why p-values beside the gaps: a gap is a difference of rates over a few hundred labelled rows, so it is noisy — over
three equal groups of ~70 rows each, an equalized-odds gap near 0.18 comes from noise alone, and a 0.2 limit failed a
fair model about half the time (the demo's measurement). Each gap therefore comes with Pearson's chi-square test that
the rate is the same in every group (a k × 2 table: selected or not for parity, among positives TP or not for the
TPR gap, among negatives FP or not for the FPR gap), so a rule can require the gap to be both large and real.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit
from scipy import special

from vigil.kernels._common import F64Array, I64Array, as_label_vector, check_same_length
from vigil.kernels.encoding import decode_array, encode_array

__all__ = ["GroupRates", "homogeneity_p_value"]

# columns of GroupRates.counts
_N, _PRED_POS, _POS, _TP, _FP = range(5)


@njit("int64(int64[::1], int64[::1], int64[::1], int64[:,::1])", cache=True)
def _group_kernel(groups, y_true, y_pred, counts):  # type: ignore[no-untyped-def]
    k = counts.shape[0]
    bad = 0
    for i in range(groups.size):
        g = groups[i]
        t = y_true[i]
        p = y_pred[i]
        if g < 0 or g >= k or (t != 0 and t != 1) or (p != 0 and p != 1):
            bad += 1
            continue
        counts[g, 0] += 1
        counts[g, 1] += p
        counts[g, 2] += t
        counts[g, 3] += t & p
        counts[g, 4] += (1 - t) & p
    return bad


def homogeneity_p_value(successes: npt.ArrayLike, totals: npt.ArrayLike) -> float:
    """Pearson's chi-square test (no continuity correction, k − 1 degrees of freedom) that every group with rows has
    the same success rate: the p-value; NaN with fewer than two such groups, 1 when every row (or none) succeeded."""
    n_all = np.asarray(totals, dtype=np.float64)
    keep = n_all > 0
    s, n = np.asarray(successes, dtype=np.float64)[keep], n_all[keep]
    if s.size < 2:
        return float("nan")
    total, hits = float(n.sum()), float(s.sum())
    if hits <= 0 or hits >= total:
        return 1.0
    rate = hits / total
    expected_hit, expected_miss = n * rate, n * (1.0 - rate)
    chi2 = float((((s - expected_hit) ** 2) / expected_hit + (((n - s) - expected_miss) ** 2) / expected_miss).sum())
    return float(special.chdtrc(s.size - 1, chi2))


def _gap(rates: F64Array) -> float:
    ok = rates[np.isfinite(rates)]
    return float(ok.max() - ok.min()) if ok.size else float("nan")


class GroupRates:
    """Per-group counters ``(n, predicted positive, actual positive, true positive, false positive)``."""

    def __init__(self, n_groups: int) -> None:
        if n_groups < 1:
            raise ValueError("n_groups must be >= 1")
        self.counts: I64Array = np.zeros((n_groups, 5), dtype=np.int64)
        self.missing = 0

    @property
    def n_groups(self) -> int:
        return int(self.counts.shape[0])

    def update(self, groups: npt.ArrayLike, y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> GroupRates:
        """Fold a batch in place (``groups`` integer codes; labels and predictions 0/1); returns ``self``."""
        g = as_label_vector(groups, name="groups")
        t = as_label_vector(y_true, name="y_true")
        p = as_label_vector(y_pred, name="y_pred")
        check_same_length(groups=g, y_true=t, y_pred=p)
        self.missing += int(_group_kernel(g, t, p, self.counts))
        return self

    def merge(self, other: GroupRates) -> GroupRates:
        if other.n_groups != self.n_groups:
            raise ValueError("cannot merge states with different group counts")
        out = GroupRates(self.n_groups)
        out.counts = self.counts + other.counts
        out.missing = self.missing + other.missing
        return out

    def rates(self) -> dict[str, F64Array]:
        """Selection rate, TPR and FPR per group (NaN where undefined)."""
        c = self.counts.astype(np.float64)
        neg = c[:, _N] - c[:, _POS]
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "selection_rate": np.where(c[:, _N] > 0, c[:, _PRED_POS] / c[:, _N], np.nan),
                "tpr": np.where(c[:, _POS] > 0, c[:, _TP] / c[:, _POS], np.nan),
                "fpr": np.where(neg > 0, c[:, _FP] / neg, np.nan),
            }

    def metrics(self) -> dict[str, float]:
        r = self.rates()
        sel = r["selection_rate"][np.isfinite(r["selection_rate"])]
        tpr_gap, fpr_gap = _gap(r["tpr"]), _gap(r["fpr"])
        defined = [gap for gap in (tpr_gap, fpr_gap) if np.isfinite(gap)]
        eo = max(defined) if defined else float("nan")
        c = self.counts
        negatives = c[:, _N] - c[:, _POS]
        return {
            "demographic_parity_difference": _gap(r["selection_rate"]),
            "demographic_parity_p_value": homogeneity_p_value(c[:, _PRED_POS], c[:, _N]),
            "tpr_gap_p_value": homogeneity_p_value(c[:, _TP], c[:, _POS]),
            "fpr_gap_p_value": homogeneity_p_value(c[:, _FP], negatives),
            "demographic_parity_ratio": float(sel.min() / sel.max()) if sel.size and sel.max() > 0 else float("nan"),
            "tpr_gap": tpr_gap,
            "fpr_gap": fpr_gap,
            "equalized_odds_difference": eo,
            "count": float(self.counts[:, _N].sum()),
            "missing": float(self.missing),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_groups": self.n_groups,
            "counts": encode_array(self.counts, shrink_counts=True),
            "missing": self.missing,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GroupRates:
        k = d.get("n_groups")
        if not isinstance(k, int) or k < 1:
            raise ValueError("group rates: bad n_groups")
        out = cls(k)
        counts = decode_array(d.get("counts"), dtype=np.int64, name="counts")
        if counts.size != 5 * k:
            raise ValueError("group rates: counts length")
        out.counts = counts.reshape(k, 5).copy()
        out.missing = int(d.get("missing", 0))
        return out
