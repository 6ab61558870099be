"""Drift statistics from profiles against scipy/numpy on the raw data, including the KS and W1 error bounds."""

from __future__ import annotations

import naive
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import columns

from vigil.kernels.drift import categorical_drift, numeric_drift
from vigil.kernels.profile import categorical_reference, categorical_window, numeric_profile, reference_profile

pytestmark = pytest.mark.unit


def check_against_raw(a: np.ndarray, b: np.ndarray, n_bins: int, n_coarse: int) -> None:
    ref = reference_profile(a, n_bins=n_bins)
    win = numeric_profile(b, ref.edges)
    d = numeric_drift(ref, win, n_coarse=n_coarse)
    fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
    if fa.size == 0 or fb.size == 0:
        assert np.isnan(d.psi[0]) and np.isnan(d.ks[0]) and np.isnan(d.w1[0])
        return
    edges = ref.edges.feature(0)
    groups = naive.coarse_group_of_bins(ref.feature_counts(0), n_coarse)
    rc = naive.coarse_counts(a, edges, groups, n_coarse)
    wc = naive.coarse_counts(b, edges, groups, n_coarse)
    # exact on the same (coarse) bins
    assert d.psi[0] == pytest.approx(naive.psi(rc, wc), rel=1e-9, abs=1e-12)
    assert d.js[0] == pytest.approx(naive.js_distance(rc, wc), rel=1e-7, abs=1e-7)
    assert d.hellinger[0] == pytest.approx(naive.hellinger(rc, wc), rel=1e-7, abs=1e-7)
    stat, dof, p = naive.chi2(rc, wc)
    assert d.chi2[0] == pytest.approx(stat, rel=1e-9, abs=1e-9)
    assert d.chi2_dof[0] == dof
    assert d.chi2_pvalue[0] == pytest.approx(p, rel=1e-6, abs=1e-12)
    # KS: binned statistic is a lower bound, ks_upper an upper bound of scipy's exact statistic
    exact = naive.ks_exact(a, b)
    assert d.ks[0] <= exact + 1e-12
    assert exact <= d.ks_upper[0] + 1e-12
    assert d.ks_pvalue[0] == pytest.approx(naive.ks_pvalue_asymptotic(d.ks[0], fa.size, fb.size), rel=1e-9)
    # W1 within its stated bound of scipy's exact value
    w1 = naive.w1_exact(a, b)
    if np.isfinite(w1) and np.isfinite(d.w1_bound[0]):
        assert abs(d.w1[0] - w1) <= d.w1_bound[0] * (1 + 1e-9) + 1e-9 * max(1.0, abs(w1))


@given(a=columns(min_rows=1), b=columns(), n_bins=st.integers(1, 40), n_coarse=st.integers(1, 12))
def test_statistics_match_references(a: np.ndarray, b: np.ndarray, n_bins: int, n_coarse: int) -> None:
    check_against_raw(a, b.astype(a.dtype), n_bins, n_coarse)


@pytest.mark.parametrize(
    ("shift", "scale", "dist"), [(0.0, 1.0, "normal"), (0.3, 1.0, "normal"), (0.0, 2.0, "normal"), (0.5, 1.0, "expo")]
)
def test_ks_bound_on_large_continuous_samples(shift: float, scale: float, dist: str) -> None:
    """The documented bound: ks ≤ D ≤ ks_upper ≤ ks + max bin mass, with max bin mass ≈ 1/n_bins for the reference."""
    rng = np.random.default_rng(11)
    draw = rng.normal if dist == "normal" else (lambda size: rng.exponential(size=size))
    a = draw(size=50_000)
    b = draw(size=30_000) * scale + shift
    ref = reference_profile(a, n_bins=1024)
    win = numeric_profile(b, ref.edges)
    d = numeric_drift(ref, win)
    exact = naive.ks_exact(a, b)
    assert d.ks[0] <= exact <= d.ks_upper[0]
    p = ref.feature_counts(0) / a.size
    q = win.feature_counts(0) / b.size
    assert d.ks_upper[0] - d.ks[0] <= max(p.max(), q.max()) + 1e-12
    assert exact - d.ks[0] < 3e-3  # about three reference bins' worth, for continuous data
    check_against_raw(a, b, 1024, 10)


def test_w1_is_exact_for_out_of_range_mass() -> None:
    """Live values beyond the training range (the drift that matters most) add no W1 error: tail sums make it exact."""
    rng = np.random.default_rng(9)
    a = rng.normal(size=40_000)
    b = np.concatenate([rng.normal(size=20_000), 8 + rng.lognormal(0, 1, 5_000), -6 - rng.exponential(2, 3_000)])
    ref = reference_profile(a, n_bins=1024)
    d = numeric_drift(ref, numeric_profile(b, ref.edges))
    exact = naive.w1_exact(a, b)
    assert abs(d.w1[0] - exact) <= d.w1_bound[0]
    assert abs(d.w1[0] - exact) / exact < 0.01  # the tails carry most of W1 here, and they are exact


def test_identical_empty_and_constant() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(size=5000)
    ref = reference_profile(a, n_bins=256)
    same = numeric_drift(ref, ref)
    for v in (same.psi, same.js, same.hellinger, same.chi2, same.ks, same.w1):
        assert v[0] == pytest.approx(0.0, abs=1e-12)
    assert same.ks_pvalue[0] == pytest.approx(1.0) and same.chi2_pvalue[0] == pytest.approx(1.0)
    empty = numeric_drift(ref, numeric_profile(np.full(10, np.nan), ref.edges))
    assert np.isnan(empty.psi[0]) and np.isnan(empty.ks_pvalue[0]) and empty.missing_window[0] == 10
    const = reference_profile(np.full(100, 2.0))
    moved = numeric_drift(const, numeric_profile(np.full(50, 3.0), const.edges))
    assert moved.ks[0] == pytest.approx(1.0) and moved.w1[0] == pytest.approx(1.0) and moved.w1_norm[0] == np.inf
    assert numeric_drift(const, const).w1_norm[0] == 0.0
    other = reference_profile(a[:100], n_bins=8)
    with pytest.raises(ValueError, match="same edges"):
        numeric_drift(ref, other)


@given(
    a=st.lists(st.sampled_from(["a", "b", "c", "d", "e", ""]), min_size=1, max_size=200),
    b=st.lists(st.sampled_from(["a", "b", "x", "y", ""]), max_size=200),
    k=st.integers(1, 6),
)
def test_categorical_matches_references(a: list[str], b: list[str], k: int) -> None:
    av, bv = np.array(a, dtype=str), np.array(b, dtype=str)
    ref = categorical_reference([av], max_categories=k)
    win = categorical_window([bv], ref)
    d = categorical_drift(ref, win)
    rc = naive.category_counts(av, ref.categories[0], av == "").astype(float)
    wc = naive.category_counts(bv, ref.categories[0], bv == "").astype(float)
    if rc.sum() == 0 or wc.sum() == 0:
        assert np.isnan(d.psi[0])
        return
    assert d.psi[0] == pytest.approx(naive.psi(rc, wc), rel=1e-9, abs=1e-12)
    assert d.js[0] == pytest.approx(naive.js_distance(rc, wc), rel=1e-7, abs=1e-7)
    assert d.hellinger[0] == pytest.approx(naive.hellinger(rc, wc), rel=1e-7, abs=1e-7)
    stat, dof, p = naive.chi2(rc, wc)
    assert d.chi2[0] == pytest.approx(stat, rel=1e-9, abs=1e-9) and d.chi2_dof[0] == dof
    assert d.chi2_pvalue[0] == pytest.approx(p, rel=1e-6, abs=1e-12)


def test_subnormal_spread_keeps_w1_finite() -> None:
    """Regression (found by hypothesis in CI): a reference whose values differ by a subnormal amount made W1 NaN."""
    check_against_raw(np.array([0.0, 2.22507386e-309]), np.array([0.0]), 1, 1)
