"""Calibrated drift alarms (#21 item 3): a verdict needs the effect size *and* a test that holds its level at any
window size. Checked against scipy on raw data, and by simulation: clean windows drawn from the reference must
raise an alarm (any feature flagged) in at most α of windows at 30, 50, 200 and 1,000 rows, and a real shift must
still be caught."""

from __future__ import annotations

import naive
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from vigil.kernels.drift import category_exact_pvalue, holm_adjusted
from vigil.kernels.profile import DatasetProfile
from vigil.kernels.report import DriftThresholds, adjust_pvalues, drift_report

pytestmark = pytest.mark.unit

ALPHA = 0.01
_CATS = np.array([f"c{i}" for i in range(64)])
_ZIPF = (p := 1 / np.arange(1, 65) ** 1.2) / p.sum()  # 64 categories, the rarest at 0.15 %: χ²'s weak spot
_THREE = np.array([0.6, 0.3, 0.1])


def draw(rng: np.random.Generator, n: int, shift: float = 0.0, n_shifted: int = 0) -> tuple[np.ndarray, list]:
    """20 numeric features (normal, lognormal, a discrete one) and two categorical ones; the first ``n_shifted``
    (normal) features move by ``shift`` standard deviations."""
    x = np.empty((n, 20), order="F")
    x[:, :16] = rng.normal(size=(n, 16))
    x[:, 16:19] = rng.lognormal(0, 0.7, size=(n, 3))
    x[:, 19] = rng.poisson(3, size=n)  # ties: the KS test is conservative there, never liberal
    x[:, :n_shifted] += shift  # n_shifted ≤ 16: standard normals, so the shift is in σ
    return x, [rng.choice(_CATS, n, p=_ZIPF), rng.choice(_CATS[:3], n, p=_THREE)]


@pytest.fixture(scope="module")
def reference() -> tuple[DatasetProfile, np.ndarray, list]:
    rng = np.random.default_rng(2101)
    x, c = draw(rng, 20_000)
    return DatasetProfile.build(x, c), x, c


@given(
    rc=st.lists(st.integers(0, 400), min_size=1, max_size=8),
    data=st.data(),
)
def test_category_pvalue_matches_scipy_fisher(rc: list[int], data: st.DataObject) -> None:
    wc = data.draw(st.lists(st.integers(0, 60), min_size=len(rc), max_size=len(rc)))
    a, b = np.array(rc), np.array(wc)
    got = category_exact_pvalue(a, b)
    if a.sum() == 0 or b.sum() == 0:
        assert np.isnan(got)
        return
    assert got == pytest.approx(naive.category_exact_pvalue(a, b), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("n", [30, 200, 1000, 5000])
@pytest.mark.parametrize("shifted", [False, True])
def test_category_pvalue_matches_scipy_fisher_at_production_margins(reference: tuple, n: int, shifted: bool) -> None:
    """The reference's 20,000 rows against windows of 30 to 5,000 rows, clean and shifted (p-values down to the
    far tails): the kernel's tail sums against scipy's ``fisher_exact``, category by category."""
    ref = reference[0].categorical
    rng = np.random.default_rng(n + shifted)
    for _ in range(5):
        _, cats = draw(rng, n)
        if shifted:
            cats[0] = rng.choice(_CATS, n, p=np.roll(_ZIPF, 1))
        window = ref.window(cats)
        for a, b in zip(ref.offsets[:-1], ref.offsets[1:], strict=True):
            rc, wc = ref.counts[a:b], window.counts[a:b]
            assert category_exact_pvalue(rc, wc) == pytest.approx(
                naive.category_exact_pvalue(rc, wc), rel=1e-6, abs=1e-12
            )


@given(p=st.lists(st.one_of(st.floats(0, 1), st.just(0.01 / 3)), min_size=1, max_size=30), alpha=st.floats(1e-4, 0.2))
def test_holm_matches_the_textbook_procedure(p: list[float], alpha: float) -> None:
    adjusted = holm_adjusted(np.array(p))
    assert list(adjusted <= alpha) == naive.holm_reject(p, alpha)
    assert np.all(adjusted >= np.array(p)) and np.all(adjusted <= 1.0)


def test_adjustment_skips_unjudged_features() -> None:
    p = np.array([0.001, np.nan, 0.02, 0.5])
    holm = adjust_pvalues(p, "holm")
    assert np.isnan(holm[1]) and holm[0] == pytest.approx(0.003) and holm[2] == pytest.approx(0.04)
    assert adjust_pvalues(p, "bonferroni")[2] == pytest.approx(0.06)
    np.testing.assert_array_equal(adjust_pvalues(p, "none"), p)


@pytest.mark.parametrize(("n", "shift"), [(30, 0.0), (50, 1.0), (200, 0.3), (1000, 0.15)])
def test_verdicts_match_a_plain_scipy_rule(reference: tuple, n: int, shift: float) -> None:
    """Flag = effect size over threshold and Holm-rejected test, recomputed from the raw data with scipy."""
    ref, rx, rcats = reference
    rng = np.random.default_rng(n)
    x, cats = draw(rng, n, shift, n_shifted=6)
    cats[1][: n // 3] = "c2"  # the three-category feature drifts too
    rep = drift_report(ref, ref.window(x, cats))
    assert rep.numeric is not None and rep.categorical is not None
    m = rx.shape[0]
    pvals = []
    for f in range(20):
        ks = naive.ks_binned(rx[:, f], x[:, f], ref.numeric.edges.feature(f))
        assert rep.numeric.ks[f] == pytest.approx(ks, abs=1e-12)
        pvals.append(naive.ks_pvalue_asymptotic(ks, m, n))
    for j in range(2):
        vocab = ref.categorical.categories[j]
        rc = naive.category_counts(rcats[j], vocab, rcats[j] == "")
        wc = naive.category_counts(cats[j], vocab, cats[j] == "")
        pvals.append(naive.category_exact_pvalue(rc, wc))
    reject = naive.holm_reject(pvals, ALPHA)
    effect = [*(rep.numeric.psi > 0.2), *(rep.categorical.psi > 0.2)]
    expected = [bool(e and r) for e, r in zip(effect, reject, strict=True)]
    assert [*rep.numeric_drifted, *rep.categorical_drifted] == expected
    records = rep.features()
    assert records["f0"]["test_pvalue"] == pytest.approx(pvals[0], rel=1e-9)
    assert records["f0"]["alpha"] == ALPHA
    # without the test the verdict is the effect size alone (the rule before #21)
    old = drift_report(ref, ref.window(x, cats), DriftThresholds(alpha=None))
    assert [*old.numeric_drifted, *old.categorical_drifted] == [bool(e) for e in effect]


def alarm_rate(ref: DatasetProfile, n: int, windows: int, seed: int, thresholds: DriftThresholds, **shift) -> float:
    rng = np.random.default_rng(seed)
    alarms = 0
    for _ in range(windows):
        alarms += drift_report(ref, ref.window(*draw(rng, n, **shift)), thresholds).n_drifted > 0
    return alarms / windows


@pytest.mark.parametrize("n", [30, 50, 200, 1000])
def test_false_alarm_rate_on_clean_windows_is_at_most_alpha(reference: tuple, n: int) -> None:
    """Any feature flagged in a window drawn from the reference counts as a false alarm. With 1,000 windows the
    check rejects a true rate above α: it fails if the count is improbably high for a rate of exactly α
    (binomial tail < 0.001) — as the effect-size-only rule does at 30 and 50 rows."""
    ref = reference[0]
    windows = 1000
    rate = alarm_rate(ref, n, windows, seed=7 + n, thresholds=DriftThresholds())
    tail = stats.binom.sf(round(rate * windows) - 1, windows, ALPHA)
    assert tail > 1e-3, f"false alarm rate {rate:.4f} at {n} rows"
    if n <= 50:
        old = alarm_rate(ref, n, 200, seed=7 + n, thresholds=DriftThresholds(alpha=None))
        assert stats.binom.sf(round(old * 200) - 1, 200, ALPHA) < 1e-3  # the same check catches the old rule


@pytest.mark.parametrize(("n", "at_least"), [(200, 0.95), (1000, 0.99)])
def test_a_real_shift_is_still_caught(reference: tuple, n: int, at_least: float) -> None:
    """0.5 σ mean shift in 3 of the 20 numeric features: the benchmark's stated shift."""
    rate = alarm_rate(reference[0], n, 200, seed=99, thresholds=DriftThresholds(), shift=0.5, n_shifted=3)
    assert rate >= at_least


def test_a_categorical_shift_is_caught_at_thirty_rows(reference: tuple) -> None:
    ref = reference[0]
    rng = np.random.default_rng(5)
    x, cats = draw(rng, 30)
    cats[1] = rng.choice(_CATS[:3], 30, p=[0.2, 0.3, 0.5])
    rep = drift_report(ref, ref.window(x, cats))
    assert rep.categorical_drifted[1] and not rep.numeric_drifted.any()
