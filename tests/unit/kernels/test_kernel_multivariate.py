"""Multivariate drift (#21 item 2): PCA reconstruction error against a plain SVD reference, its mergeable window
state and band, the domain classifier, and NannyML's butterfly — a correlation flip that every per-feature
statistic misses and both multivariate measures catch."""

from __future__ import annotations

import json

import naive
import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from sklearn.metrics import roc_auc_score

from vigil.kernels.multivariate import (
    PCAReference,
    ReconstructionState,
    auroc,
    domain_classifier_auroc,
    fit_pca_reference,
)
from vigil.kernels.profile import DatasetProfile
from vigil.kernels.report import DriftThresholds, drift_report

pytestmark = pytest.mark.unit

DPP = 7 * 24 * 12  # NannyML's butterfly: rows per "period" (a week of five-minute events)


def butterfly(seed: int = 23) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NannyML's example (docs/how_it_works/data_reconstruction.rst): x1 and x2 share a signal, x3 is noise; the
    drifted data is the same cloud rotated 90° about x3, so x1 ≈ −x2 afterwards while every marginal is unchanged.
    Returns reference (10 periods), clean analysis (5 periods), drifted analysis (5 periods)."""
    rng = np.random.default_rng(seed)
    s1 = rng.normal(size=DPP * 20)
    x = np.column_stack(
        [s1 + rng.normal(size=DPP * 20) / 8, s1 + rng.normal(size=DPP * 20) / 8, rng.normal(size=DPP * 20) / 8]
    )
    rotated = (Rotation.from_euler("z", 90, degrees=True).as_matrix() @ x.T).T
    return x[: 10 * DPP], x[10 * DPP : 15 * DPP], rotated[15 * DPP :]


def correlated(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    """Rows with a fixed correlation structure (a random mixing of independent normals) and mixed scales."""
    mix = np.random.default_rng(0).normal(size=(d, d)) * np.linspace(0.2, 3, d)
    return rng.normal(size=(n, d)) @ mix + np.arange(d)


@pytest.mark.parametrize("share", [0.3, 0.65, 0.9, 1.0])
def test_row_errors_match_svd_reference(share: float) -> None:
    rng = np.random.default_rng(1)
    ref = correlated(rng, 3000)
    x = correlated(rng, 500) * 1.3
    p = fit_pca_reference(ref, variance_share=share)
    _, _, _, eig, k = naive.pca_by_svd(ref, share)
    assert p.n_components == k and p.explained >= share - 1e-12
    np.testing.assert_allclose(p.eigenvalues, eig, rtol=1e-8, atol=1e-10)
    errors, imputed = p.row_errors(x)
    np.testing.assert_allclose(errors, naive.reconstruction_errors(ref, x, share), rtol=1e-7, atol=1e-9)
    assert imputed == 0
    ref_errors = naive.crossfit_errors(ref, share, 10)
    assert p.error_mean == pytest.approx(ref_errors.mean(), rel=1e-9, abs=1e-12)
    chunks = ref_errors[: (3000 // p.chunk) * p.chunk].reshape(-1, p.chunk).mean(axis=1)
    assert p.chunk_sd == pytest.approx(chunks.std(ddof=1), rel=1e-7, abs=1e-12)
    in_sample = fit_pca_reference(ref, variance_share=share, folds=1)
    assert in_sample.error_mean == pytest.approx(naive.reconstruction_errors(ref, ref, share).mean(), rel=1e-9)
    assert in_sample.error_mean <= p.error_mean + 1e-12  # the axes fit their own sample best


def test_missing_values_take_the_reference_mean_and_constant_columns_are_harmless() -> None:
    rng = np.random.default_rng(2)
    ref = correlated(rng, 2000, 5)
    ref[:, 4] = 7.0  # constant
    p = fit_pca_reference(ref)
    x = correlated(rng, 50, 5)
    x[:, 4] = 7.0
    holes = x.copy()
    holes[3, 1] = np.nan
    holes[8, 0] = np.inf
    filled = x.copy()
    filled[3, 1] = p.mean[1]
    filled[8, 0] = p.mean[0]
    got, imputed = p.row_errors(holes)
    np.testing.assert_allclose(got, p.row_errors(filled)[0])
    assert imputed == 2 and np.all(np.isfinite(got))


def test_state_merges_exactly_and_round_trips() -> None:
    rng = np.random.default_rng(3)
    ref = correlated(rng, 4000)
    p = fit_pca_reference(ref)
    x = correlated(rng, 900)
    whole = ReconstructionState().update(p, x)
    parts = ReconstructionState().update(p, x[:400]).merge(ReconstructionState().update(p, x[400:]))
    assert parts.count == whole.count == 900
    assert parts.mean == pytest.approx(whole.mean, rel=1e-12)
    assert parts.mean == pytest.approx(naive.reconstruction_errors(ref, x, 0.65).mean(), rel=1e-9)
    assert ReconstructionState.from_dict(json.loads(json.dumps(whole.to_dict()))) == whole
    back = PCAReference.from_dict(json.loads(json.dumps(p.to_dict())))
    np.testing.assert_array_equal(back.row_errors(x)[0], p.row_errors(x)[0])
    assert back.band(100) == p.band(100)
    with pytest.raises(ValueError, match="format"):
        PCAReference.from_dict({**p.to_dict(), "format": "pickle"})
    assert ReconstructionState().judge(p)["error"] is None


def test_band_holds_clean_windows_and_catches_a_broken_correlation() -> None:
    """Clean windows of 50, 500 and 2,000 rows stay inside the 3σ band in ≤ 2 % of 300 windows — also for 20
    independent features, where the in-sample band (``folds=1``, NannyML's way) fails at 2,000 rows because the
    axes hug the reference's noise; scrambling the correlation structure (each column permuted on its own:
    marginals intact) leaves it."""
    rng = np.random.default_rng(4)
    p = fit_pca_reference(correlated(rng, 20_000))
    iid = fit_pca_reference(rng.normal(size=(20_000, 20)))
    iid_in_sample = fit_pca_reference(rng.normal(size=(20_000, 20)), folds=1)

    def outside(ref: PCAReference, draw: object, n: int) -> float:
        return sum(bool(ReconstructionState().update(ref, draw(n)).judge(ref)["drifted"]) for _ in range(300)) / 300

    for n in (50, 500, 2000):
        assert outside(p, lambda k: correlated(rng, k), n) <= 0.02, n
        assert outside(iid, lambda k: rng.normal(size=(k, 20)), n) <= 0.02, n
    assert outside(iid_in_sample, lambda k: rng.normal(size=(k, 20)), 2000) > 0.1
    x = correlated(rng, 500)
    scrambled = np.column_stack([rng.permutation(col) for col in x.T])
    assert ReconstructionState().update(p, scrambled).judge(p)["drifted"]


def test_auroc_equals_sklearn() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    s = np.round(rng.normal(size=400) + y, 1)  # ties
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), rel=1e-12)


def test_butterfly_is_caught_by_multivariate_and_missed_by_univariate() -> None:
    ref, clean, drifted = butterfly()
    p = fit_pca_reference(ref)
    profile = DatasetProfile.build(np.asfortranarray(ref))
    for w in range(5):  # NannyML's chunks: one period each
        chunk_clean = clean[w * DPP : (w + 1) * DPP]
        chunk_drift = drifted[w * DPP : (w + 1) * DPP]
        assert not ReconstructionState().update(p, chunk_clean).judge(p)["drifted"]
        assert ReconstructionState().update(p, chunk_drift).judge(p)["drifted"]
        for rows in (chunk_clean, chunk_drift):  # no per-feature statistic sees it, under either rule
            rep = drift_report(profile, profile.window(np.asfortranarray(rows)))
            assert rep.n_drifted == 0
            for name in ("psi", "js", "ks", "w1_norm"):
                assert rep.numeric is not None and np.all(getattr(rep.numeric, name) < 0.1)
            assert (
                drift_report(profile, profile.window(np.asfortranarray(rows)), DriftThresholds(alpha=None)).n_drifted
                == 0
            )
    quiet = domain_classifier_auroc(p.sample, clean[:DPP])
    loud = domain_classifier_auroc(p.sample, drifted[:DPP])
    assert not quiet.drifted() and abs(quiet.auroc - 0.5) < 4 * quiet.null_sd
    assert loud.drifted() and loud.auroc > 0.9


def test_domain_classifier_sees_a_mean_shift_and_bounds_its_cost() -> None:
    rng = np.random.default_rng(6)
    ref = correlated(rng, 8000)
    shifted = correlated(rng, 20_000)
    shifted[:, 2] += 2.0
    res = domain_classifier_auroc(ref, shifted, max_rows=2000)
    assert res.n_reference == res.n_window == 2000 and res.drifted()
    with pytest.raises(ValueError, match="features"):
        domain_classifier_auroc(ref, shifted[:, :3])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
def test_layouts_dtypes_and_the_threaded_split_agree(dtype: type, order: str) -> None:
    """The jitted pass reads float32/float64 in either layout without a copy; a batch large enough to be split
    across the worker threads gives the same errors and imputed count as the plain SVD reference."""
    rng = np.random.default_rng(7)
    ref = correlated(rng, 3000)
    p = fit_pca_reference(ref)
    x = np.asarray(correlated(rng, 70_000), dtype=dtype, order=order)  # above the 65,536-row threading cut
    x[5, 2] = np.nan
    x[69_999, 0] = np.inf
    got, imputed = p.row_errors(x)
    filled = x.astype(np.float64)
    filled[5, 2], filled[69_999, 0] = p.mean[2], p.mean[0]
    np.testing.assert_allclose(got, naive.reconstruction_errors(ref, filled, 0.65), rtol=1e-7, atol=1e-9)
    assert imputed == 2


def test_kept_and_discarded_axes_give_the_same_errors_with_holes_and_odd_row_counts() -> None:
    """The row pass computes ‖z‖ on the discarded axes, or √(‖z‖² − ‖z‖² on the kept ones) when fewer axes are kept
    — the same figure by Pythagoras. Both forms, rows in tiles of four plus a remainder, a NaN and an inf in the
    tiled part and in the remainder, against the plain SVD reference."""
    rng = np.random.default_rng(11)
    ref = correlated(rng, 2000)
    x = correlated(rng, 203)  # 50 tiles of four and three rows left over
    x[6, 1], x[201, 3], x[40, 0] = np.nan, np.inf, -np.inf
    filled = x.copy()
    for i, f in ((6, 1), (201, 3), (40, 0)):
        filled[i, f] = ref.mean(axis=0)[f]
    for share in (0.3, 0.9):  # few kept axes (Pythagoras form), then few discarded ones
        p = fit_pca_reference(ref, variance_share=share)
        assert p._kept_mode == (p.n_components < p.n_features - p.n_components)
        expected = naive.reconstruction_errors(ref, filled, share)
        kept_form, bad_k = _errors_with(p, x, kept=True)
        discarded_form, bad_d = _errors_with(p, x, kept=False)
        np.testing.assert_allclose(kept_form, expected, rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(discarded_form, expected, rtol=1e-9, atol=1e-12)
        assert bad_k == bad_d == 3
    modes = {fit_pca_reference(ref, variance_share=s)._kept_mode for s in (0.3, 0.9)}
    assert modes == {True, False}  # both forms are what fit_pca_reference picks for some share


def _errors_with(p: PCAReference, x: np.ndarray, *, kept: bool) -> tuple[np.ndarray, int]:
    from vigil.kernels.multivariate import _errors_into, _even_axes

    k = p.n_components
    axes = _even_axes(p.axes[:k] if kept else p.axes[k:])
    out = np.empty(x.shape[0])
    bad = _errors_into(np.ascontiguousarray(x), p.mean, p._inv, axes, kept, 0, x.shape[0], out)
    return out, int(bad)


@pytest.mark.parametrize("order", ["C", "F"])
def test_chunk_states_equal_one_update_per_chunk_and_the_reference(order: str) -> None:
    """``chunk_states`` (one pass, per-chunk sums, chunks split across the worker threads above 65,536 rows) gives
    each chunk the state that ``ReconstructionState().update`` gives it, and the naive mean error; the last chunk
    may be short; a large single ``update`` (split by rows across the threads) agrees with the reference too."""
    rng = np.random.default_rng(12)
    ref = correlated(rng, 3000)
    p = fit_pca_reference(ref)
    x = np.asarray(correlated(rng, 70_003), order=order)
    x[17, 2] = np.nan
    x[69_990, 5] = np.inf
    filled = x.copy()
    filled[17, 2], filled[69_990, 5] = p.mean[2], p.mean[5]
    expected = naive.reconstruction_errors(ref, filled, 0.65)
    states = p.chunk_states(x, 10_000)
    assert [s.count for s in states] == [10_000] * 7 + [3]
    assert sum(s.imputed for s in states) == 2
    for c, s in enumerate(states):
        one = ReconstructionState().update(p, x[c * 10_000 : (c + 1) * 10_000])
        assert (s.count, s.imputed) == (one.count, one.imputed)
        assert s.total == pytest.approx(one.total, rel=1e-12)
        assert s.total_sq == pytest.approx(one.total_sq, rel=1e-12)
        assert s.mean == pytest.approx(expected[c * 10_000 : (c + 1) * 10_000].mean(), rel=1e-9)
    whole = ReconstructionState().update(p, x)
    assert whole.count == 70_003 and whole.imputed == 2
    assert whole.mean == pytest.approx(expected.mean(), rel=1e-9)
    assert whole.total_sq == pytest.approx(float(expected @ expected), rel=1e-9)
    with pytest.raises(ValueError, match="chunk"):
        p.chunk_states(x, 0)
    assert p.chunk_states(x[:0], 10) == []
