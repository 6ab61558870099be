"""Streaming quality, latency and fairness states against sklearn/numpy references."""

from __future__ import annotations

import json

import naive
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vigil.kernels.fairness import GroupRates, homogeneity_p_value
from vigil.kernels.quality import BinaryClassificationState, ConfusionMatrix, RegressionState
from vigil.kernels.sketch import LatencySketch

pytestmark = pytest.mark.unit

probs = st.floats(0, 1, allow_nan=False)


@given(
    y=hnp.arrays(np.int64, st.integers(0, 300), elements=st.integers(0, 1)),
    data=st.data(),
    n_bins=st.sampled_from([10, 100, 1000]),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_binary_metrics_match_sklearn_on_quantized_scores(
    y: np.ndarray, data: st.DataObject, n_bins: int, dtype: type
) -> None:
    s = data.draw(hnp.arrays(dtype, y.size, elements=st.floats(0, 1, width=32)))
    state = BinaryClassificationState(n_bins).update(y, s)
    assert state.count == y.size and state.missing == 0
    if 0 < y.sum() < y.size:
        assert state.roc_auc() == pytest.approx(naive.roc_auc_from_quantized(y, s, n_bins), abs=1e-12)
        assert state.pr_auc() == pytest.approx(naive.average_precision_from_quantized(y, s, n_bins), abs=1e-12)
    if y.size:
        assert state.log_loss() == pytest.approx(naive.log_loss(y, s), rel=1e-9)
        assert state.brier() == pytest.approx(float(np.mean((s.astype(float) - y) ** 2)), rel=1e-9, abs=1e-15)
        assert state.ece(10) == pytest.approx(naive.ece(y, s, n_bins, 10), rel=1e-9, abs=1e-12)


def test_binary_raw_auc_within_tie_bound_invalid_rows_and_merge() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 20_000)
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    a = BinaryClassificationState().update(y[:7000], s[:7000])
    b = BinaryClassificationState().update(y[7000:], s[7000:])
    m = a.merge(b)
    whole = BinaryClassificationState().update(y, s)
    assert m.roc_auc() == whole.roc_auc() and m.log_loss() == pytest.approx(whole.log_loss())
    assert abs(whole.roc_auc() - roc_auc_score(y, s)) <= whole.roc_auc_tie_bound()
    bad = BinaryClassificationState().update(np.array([0, 1, 2, -1, 1.0]), np.array([0.5, np.nan, 0.2, 0.3, 1.5]))
    assert bad.count == 1 and bad.missing == 4
    back = BinaryClassificationState.from_dict(json.loads(json.dumps(whole.to_dict())))
    assert back.metrics() == whole.metrics()
    assert np.isnan(BinaryClassificationState().roc_auc())
    with pytest.raises(ValueError, match="divide"):
        whole.ece(7)
    with pytest.raises(ValueError, match="integral"):
        BinaryClassificationState().update(np.array([0.5]), np.array([0.5]))


@given(
    t=hnp.arrays(np.int64, st.integers(0, 200), elements=st.integers(-1, 5)),
    data=st.data(),
    k=st.integers(1, 5),
)
def test_confusion_matrix_matches_sklearn(t: np.ndarray, data: st.DataObject, k: int) -> None:
    p = data.draw(hnp.arrays(np.int64, t.size, elements=st.integers(-1, 5)))
    cm = ConfusionMatrix(k).update(t, p)
    np.testing.assert_array_equal(cm.counts, naive.confusion(t, p, k))
    ok = (t >= 0) & (t < k) & (p >= 0) & (p < k)
    assert cm.missing == int((~ok).sum())
    if ok.any():
        assert cm.metrics()["accuracy"] == pytest.approx(float(np.mean(t[ok] == p[ok])))
    assert ConfusionMatrix.from_dict(json.loads(json.dumps(cm.to_dict()))).counts.tolist() == cm.counts.tolist()


@given(
    y=hnp.arrays(np.float64, st.integers(0, 200), elements=st.floats(-1e6, 1e6) | st.just(np.nan)),
    data=st.data(),
)
def test_regression_errors_match_numpy(y: np.ndarray, data: st.DataObject) -> None:
    yhat = data.draw(hnp.arrays(np.float64, y.size, elements=st.floats(-1e6, 1e6) | st.just(np.inf)))
    m = RegressionState().update(y, yhat).metrics()
    ok = np.isfinite(y) & np.isfinite(yhat)
    assert m["count"] == ok.sum() and m["missing"] == (~ok).sum()
    if ok.any():
        e = yhat[ok] - y[ok]
        assert m["mae"] == pytest.approx(np.abs(e).mean(), rel=1e-9, abs=1e-9)
        assert m["rmse"] == pytest.approx(np.sqrt((e**2).mean()), rel=1e-9, abs=1e-9)
    else:
        assert np.isnan(m["mae"])


@given(
    v=hnp.arrays(np.float64, st.integers(1, 400), elements=st.floats(1e-6, 1e9) | st.floats(0, 1e-7)),
    qs=st.lists(st.floats(0, 1), min_size=1, max_size=5),
    alpha=st.sampled_from([0.01, 0.05]),
)
def test_sketch_relative_error_guarantee(v: np.ndarray, qs: list[float], alpha: float) -> None:
    sk = LatencySketch(alpha).update(v)
    got = sk.quantiles(qs)
    want = np.quantile(v, qs, method="lower")
    for g, w in zip(got, want, strict=True):
        if w >= sk.min_value:
            assert abs(g - w) <= alpha * w * (1 + 1e-9)
        else:
            assert abs(g - w) < sk.min_value


def test_sketch_merge_missing_and_roundtrip() -> None:
    rng = np.random.default_rng(4)
    v = rng.lognormal(3, 1, 10_000)
    a = LatencySketch().update(v[:3000].astype(np.float32))
    b = LatencySketch().update(np.concatenate([v[3000:], [np.nan, -1.0, np.inf]]))
    m = a.merge(b)
    assert m.count == 10_000 and m.missing == 3
    whole = LatencySketch().update(np.concatenate([v[:3000].astype(np.float32), v[3000:]]))
    np.testing.assert_array_equal(m.counts, whole.counts)
    back = LatencySketch.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back.summary() == m.summary()
    assert np.isnan(LatencySketch().quantile(0.5))
    big = LatencySketch(max_value=10.0).update(np.array([1.0, 1e6]))
    assert big.quantile(1.0) == 1e6  # the overflow bucket is clamped to the exact maximum
    with pytest.raises(ValueError, match="different parameters"):
        a.merge(LatencySketch(0.02))


@given(
    g=hnp.arrays(np.int64, st.integers(0, 300), elements=st.integers(-1, 3)),
    data=st.data(),
)
def test_fairness_gaps_match_naive(g: np.ndarray, data: st.DataObject) -> None:
    y = data.draw(hnp.arrays(np.int64, g.size, elements=st.integers(0, 1)))
    yhat = data.draw(hnp.arrays(np.int64, g.size, elements=st.integers(0, 1)))
    state = GroupRates(3).update(g, y, yhat)
    ok = (g >= 0) & (g < 3)
    ref = naive.fairness(g[ok], y[ok], yhat[ok], 3)
    m = state.metrics()
    assert state.missing == int((~ok).sum())
    for key, mine in (("dp", "demographic_parity_difference"), ("tpr_gap", "tpr_gap"), ("fpr_gap", "fpr_gap")):
        if np.isnan(ref[key]):
            assert np.isnan(m[mine])
        else:
            assert m[mine] == pytest.approx(ref[key], abs=1e-12)
    back = GroupRates.from_dict(json.loads(json.dumps(state.to_dict())))
    assert back.counts.tolist() == state.counts.tolist()


@given(
    n=hnp.arrays(np.int64, st.integers(2, 6), elements=st.integers(0, 400)),
    data=st.data(),
)
def test_fairness_homogeneity_p_value_matches_scipy_chi2_contingency(n: np.ndarray, data: st.DataObject) -> None:
    """The gaps' test (Pearson, no continuity correction) against scipy's own on the same k × 2 table."""
    from scipy.stats import chi2_contingency

    hits = np.array([data.draw(st.integers(0, int(t))) for t in n], dtype=np.int64)
    got = homogeneity_p_value(hits, n)
    rows = n > 0
    table = np.stack([hits[rows], n[rows] - hits[rows]], axis=1)
    if rows.sum() < 2:
        assert np.isnan(got)
    elif table[:, 0].sum() == 0 or table[:, 1].sum() == 0:
        assert got == 1.0  # scipy refuses a table with an empty column: no difference to see
    else:
        assert got == pytest.approx(chi2_contingency(table, correction=False).pvalue, rel=1e-9, abs=1e-300)


def test_fairness_p_values_tell_a_real_gap_from_noise() -> None:
    """Three equal groups of 70 labelled rows and one rate: the gaps are noise and the tests do not reject; a
    selection rate of 0.8 in one group against 0.3 in the others is a real parity gap."""
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(3), 70)
    y = (rng.random(210) < 0.5).astype(np.int64)
    fair = GroupRates(3).update(groups, y, (rng.random(210) < 0.5).astype(np.int64)).metrics()
    assert fair["demographic_parity_p_value"] > 0.01 and fair["tpr_gap_p_value"] > 0.01
    skewed = (rng.random(210) < np.where(groups == 0, 0.8, 0.3)).astype(np.int64)
    real = GroupRates(3).update(groups, y, skewed).metrics()
    assert real["demographic_parity_difference"] > 0.3 and real["demographic_parity_p_value"] < 1e-6
