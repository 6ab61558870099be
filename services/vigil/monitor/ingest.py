"""The hot path: fold a batch of predictions into its window state, column by column; label helpers.

Events arrive decoded and contract-checked by the bus consumer (libs/vigil/bus/consumer.py).

Folding: one numpy array per column (``None`` → NaN by numpy's float conversion), one kernel call per family
(binning, categorical counts, latency sketch). No Python loop over rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.kernels.ood import OODReference
from vigil.kernels.profile import DatasetProfile, categorical_window, encode_categories, numeric_profile
from vigil.monitor.domain import SAMPLE_ROWS, fold_sample
from vigil.monitor.estimates import ReferenceCalibration, fold_estimate
from vigil.monitor.multivariate import fold_multivariate
from vigil.monitor.state import WindowState

_POSITIVE = ("1", "true", "True", "yes", "positive")
_NEGATIVE = ("0", "false", "False", "no", "negative")


def to_binary(values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Labels/outputs → 1 (positive), 0 (negative), -1 (anything else). Bools, 0/1 numbers and common strings."""
    arr = np.asarray(values, dtype=object)
    pos = (arr == 1) | np.isin(arr, _POSITIVE)  # True == 1 and 1.0 == 1 in Python
    neg = (arr == 0) | np.isin(arr, _NEGATIVE)
    return np.where(pos, 1, np.where(neg, 0, -1)).astype(np.int64)


def float_column(values: list[Any] | None, n: int) -> npt.NDArray[np.float64]:
    """A JSON column (numbers or null) as float64; a missing column is all-NaN."""
    if values is None:
        return np.full(n, np.nan)
    return np.array(values, dtype=np.float64)  # numpy maps None to NaN


def string_column(values: list[Any] | None, n: int) -> npt.NDArray[np.str_]:
    """A JSON column (strings or null) as str with "" for missing (the kernels' missing marker)."""
    if values is None:
        return np.full(n, "", dtype=np.str_)
    arr = np.array(values, dtype=object)
    arr[arr == np.array(None)] = ""
    return arr.astype(np.str_)


_rng = np.random.default_rng(0x5EED_1D5)
_ID_POWERS = _rng.integers(1, 2**63, size=64, dtype=np.uint64) | np.uint64(1)


def id_hashes(ids: list[str]) -> npt.NDArray[np.uint64]:
    """Stable 64-bit hashes of prediction ids (≤ 64 chars), vectorised: UCS-4 code points · random odd weights,
    then a murmur-style finaliser. Stable across processes (the join index is rebuilt from them after a restart)."""
    a = np.array(ids, dtype="U64")
    cps = a.view(np.uint32).reshape(len(ids), 64).astype(np.uint64)
    h = (cps * _ID_POWERS).sum(axis=1, dtype=np.uint64)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    return h


class BatchColumns:
    """The per-row facts a later label needs: score, predicted class, sensitive-attribute group."""

    __slots__ = ("groups", "hashes", "preds", "scores")

    def __init__(
        self,
        hashes: npt.NDArray[np.uint64],
        scores: npt.NDArray[np.float32],
        preds: npt.NDArray[np.int8],
        groups: npt.NDArray[np.int16],
    ) -> None:
        self.hashes, self.scores, self.preds, self.groups = hashes, scores, preds, groups


def fold_predictions(
    st: WindowState,
    payload: Any,
    reference: DatasetProfile | None,
    *,
    prediction_bins: int,
    fairness_attribute: str | None,
    fairness_groups: npt.NDArray[np.str_] | None = None,
    calibration: ReferenceCalibration | None = None,
    multivariate: OODReference | None = None,
    sample_rows: int = SAMPLE_ROWS,
) -> BatchColumns:
    """Fold one ``prediction.logged`` batch into ``st``; return the columns the label join keeps (each row's group
    code among ``fairness_groups``, from the logged ``fairness_attribute`` column). With the
    version's ``calibration``, the served scores also feed the label-free performance estimate; with its
    ``multivariate`` reference, the numeric rows feed the PCA reconstruction error and the OOD counts, and up to
    ``sample_rows`` of them the window's sample for the domain classifier (domain.py)."""
    n = len(payload.prediction_ids)
    hashes = id_hashes(payload.prediction_ids)
    if reference is not None and reference.numeric is not None:
        names = reference.numeric.names
        x = np.empty((n, len(names)), dtype=np.float64, order="F")
        for j, name in enumerate(names):  # a loop over features, never rows
            x[:, j] = float_column(payload.numeric.get(name), n)
        wp = numeric_profile(x, reference.numeric.edges)
        st.numeric = wp if st.numeric is None else st.numeric.merge(wp)
        fold_sample(st, x, hashes, multivariate, sample_rows)
        fold_multivariate(st, x, multivariate, getattr(payload, "ood", None))
    groups = np.full(n, -1, dtype=np.int16)
    if reference is not None and reference.categorical is not None:
        cat = reference.categorical
        if all(c.dtype.kind == "U" for c in cat.categories):
            cols = [string_column(payload.categorical.get(name), n) for name in cat.names]
            wc = categorical_window(cols, cat)
            st.categorical = wc if st.categorical is None else st.categorical.merge(wc)
    if fairness_attribute is not None and fairness_groups is not None:
        # The group of each row, by the attribute's groups (monitor/groups.py): "other" past them, -1 if missing.
        values = string_column(payload.categorical.get(fairness_attribute), n)
        groups = encode_categories(values, fairness_groups).astype(np.int16)
    preds = to_binary(payload.outputs)
    if payload.scores is not None:
        scores = float_column(payload.scores, n)
    else:
        scores = np.where(preds >= 0, preds.astype(np.float64), np.nan)
    preds = np.where((preds < 0) & np.isfinite(scores), (scores >= 0.5).astype(np.int64), preds)
    ok = np.isfinite(scores) & (scores >= 0) & (scores <= 1)
    scaled = np.minimum((np.where(ok, scores, 0.0) * prediction_bins).astype(np.int64), prediction_bins - 1)
    hist = np.bincount(np.where(ok, scaled, prediction_bins), minlength=prediction_bins + 1).astype(np.int64)
    if st.prediction_hist is None or st.prediction_hist.size != hist.size:
        st.prediction_hist = hist
    else:
        st.prediction_hist = st.prediction_hist + hist
    if payload.scores is not None:
        fold_estimate(st, scores, calibration)
    st.latency.update(np.asarray(payload.latency_ms, dtype=np.float64))
    st.predictions += n
    return BatchColumns(hashes, scores.astype(np.float32), preds.astype(np.int8), groups)
