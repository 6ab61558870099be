"""Per-request OOD scores (#21 item 4): both scores against a plain SVD reference, thresholds from the reference,
and the share of flagged rows — about the reference's own share on clean data, high on rows unlike training."""

from __future__ import annotations

import json

import naive
import numpy as np
import pytest
from scipy import stats
from test_kernel_multivariate import butterfly, correlated

from vigil.kernels.multivariate import fit_pca_reference
from vigil.kernels.ood import OODReference, OODState, fit_ood

pytestmark = pytest.mark.unit


def test_scores_match_svd_reference() -> None:
    rng = np.random.default_rng(1)
    ref = correlated(rng, 4000)
    x = correlated(rng, 300) * 1.5
    o = fit_ood(fit_pca_reference(ref), ref)
    maha, err = o.scores(x)
    np.testing.assert_allclose(maha, naive.mahalanobis_kept(ref, x, 0.65), rtol=1e-7)
    np.testing.assert_allclose(err, naive.reconstruction_errors(ref, x, 0.65), rtol=1e-7, atol=1e-9)
    ref_maha = naive.mahalanobis_kept(ref, ref, 0.65)
    assert o.mahalanobis_threshold == pytest.approx(np.quantile(ref_maha, 0.995), rel=1e-9)


def test_clean_share_matches_the_reference_and_unlike_rows_are_flagged() -> None:
    rng = np.random.default_rng(2)
    o = fit_ood(fit_pca_reference(correlated(rng, 20_000)), correlated(rng, 20_000))
    assert 0.005 <= o.reference_share <= 0.01
    clean = OODState().update(o, correlated(rng, 20_000))
    # a clean window's share is the reference's up to binomial noise (two-sided 0.1 % tail)
    lo, hi = stats.binom.ppf([0.0005, 0.9995], clean.count, o.reference_share) / clean.count
    assert lo <= clean.share <= hi
    far = correlated(rng, 200)
    far[:, 0] += 50  # far outside the training range on one feature
    assert OODState().update(o, far).share == 1.0
    ref, _, drifted = butterfly()
    ob = fit_ood(fit_pca_reference(ref), ref)
    # off the reference's correlation structure: a row-level score is noisy here (x3's noise is a whole standardised
    # axis of the residual space), but the share is far above the reference's ~1 %
    share = OODState().update(ob, drifted[:2000]).share
    assert share > 5 * ob.reference_share and stats.binom.sf(round(share * 2000) - 1, 2000, ob.reference_share) < 1e-9


def test_state_merge_round_trip_and_missing() -> None:
    rng = np.random.default_rng(3)
    ref = correlated(rng, 3000)
    o = fit_ood(fit_pca_reference(ref), ref)
    x = correlated(rng, 500) * 2
    a = OODState().update(o, x[:200]).merge(OODState().update(o, x[200:]))
    assert a == OODState().update(o, x) and OODState.from_dict(a.to_dict()) == a
    back = OODReference.from_dict(json.loads(json.dumps(o.to_dict())))
    np.testing.assert_array_equal(back.flags(x), o.flags(x))
    row = np.full((1, 8), np.nan)
    assert not o.flags(row)[0]  # imputed with the reference mean: the centre, not an outlier
    assert np.isnan(OODState().share)
    with pytest.raises(ValueError, match="features"):
        o.scores(x[:, :3])
