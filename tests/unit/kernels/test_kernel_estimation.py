"""CBPE kernels against slow references: expected metrics vs Monte-Carlo label draws, the ROC estimate vs NannyML's
row-wise formula, the isotonic fit vs scikit-learn, Platt vs a direct optimiser, serialisation and merging."""

from __future__ import annotations

import json

import naive_estimation as naive
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import optimize
from sklearn.isotonic import IsotonicRegression

from vigil.kernels.calibration import (
    Calibrator,
    choose_calibrator,
    expected_calibration_error,
    fit_isotonic,
    fit_platt,
)
from vigil.kernels.estimation import ESTIMATED_METRICS, EstimationState, realised_metrics

pytestmark = pytest.mark.unit


def _window(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores and a calibrated probability that is a monotone function of them."""
    rng = np.random.default_rng(seed)
    s = rng.beta(2, 2, n)
    p = 1.0 / (1.0 + np.exp(-(4.0 * s - 2.2)))
    return s, p


@pytest.mark.parametrize("threshold", [0.5, 0.35])
def test_estimate_matches_monte_carlo_expectation_and_spread(threshold: float) -> None:
    s, p = _window(400, 1)
    est = EstimationState(threshold).update(s, p).estimate()
    mc = naive.monte_carlo(s, p, threshold, reps=3000)
    for m in ESTIMATED_METRICS:
        value, std = est[m]
        mc_mean, mc_std = mc[m]
        # ratios of expectations are not expectations of ratios: O(1/n) apart, well inside 0.01 at n = 400
        assert value == pytest.approx(mc_mean, abs=0.01), m
        assert std == pytest.approx(mc_std, rel=0.12), m
    # accuracy and precision are linear in the labels: their estimate is the expectation itself
    assert est["accuracy"][0] == pytest.approx(mc["accuracy"][0], abs=3 * mc["accuracy"][1] / np.sqrt(3000))


@given(
    codes=hnp.arrays(np.int64, st.integers(2, 300), elements=st.integers(0, 99)),
    slope=st.floats(0.5, 8.0),
)
def test_roc_estimate_equals_nannyml_rowwise_formula_when_bins_hold_one_score(codes: np.ndarray, slope: float) -> None:
    s = (codes + 0.5) / 100.0  # one distinct score per bin of a 100-bin state
    p = 1.0 / (1.0 + np.exp(-slope * (s - 0.5)))
    auc, _ = EstimationState(0.5, n_bins=100).update(s, p).estimate()["roc_auc"]
    assert auc == pytest.approx(naive.rowwise_estimated_auc(s, p), abs=1e-12)


def test_roc_estimate_is_close_to_rowwise_with_continuous_scores() -> None:
    s, p = _window(20_000, 2)
    auc, _ = EstimationState().update(s, p).estimate()["roc_auc"]
    assert auc == pytest.approx(naive.rowwise_estimated_auc(s, p), abs=1e-4)


def test_expected_confusion_is_the_sums_of_p() -> None:
    s, p = _window(1000, 3)
    cm = EstimationState(0.5).update(s, p).expected_confusion()
    yhat = s >= 0.5
    assert cm["tp"] == pytest.approx(p[yhat].sum())
    assert cm["fp"] == pytest.approx((1 - p[yhat]).sum())
    assert cm["fn"] == pytest.approx(p[~yhat].sum())
    assert cm["tn"] == pytest.approx((1 - p[~yhat]).sum())


def test_merge_equals_one_pass_and_round_trips_through_json() -> None:
    s, p = _window(5000, 4)
    whole = EstimationState(0.4).update(s, p)
    parts = EstimationState(0.4).update(s[:1234], p[:1234]).merge(EstimationState(0.4).update(s[1234:], p[1234:]))
    back = EstimationState.from_dict(json.loads(json.dumps(parts.to_dict())))
    for m in ESTIMATED_METRICS:
        assert back.estimate()[m] == pytest.approx(whole.estimate()[m], rel=1e-12), m
    with pytest.raises(ValueError, match="different bins or thresholds"):
        whole.merge(EstimationState(0.5))


def test_invalid_rows_are_missing_and_empty_windows_give_nan() -> None:
    st_ = EstimationState().update(np.array([0.2, np.nan, 1.5, 0.7]), np.array([0.1, 0.5, 0.5, np.nan]))
    assert st_.n == 1 and st_.missing == 3
    empty = EstimationState().estimate()
    assert all(np.isnan(v) and np.isnan(sd) for v, sd in empty.values())
    with pytest.raises(ValueError, match="bad threshold"):
        EstimationState.from_dict({"threshold": 2})


def test_realised_metrics_match_counting_reference() -> None:
    rng = np.random.default_rng(5)
    s = np.round(rng.random(700), 2)  # ties on purpose
    y = (rng.random(700) < s).astype(np.int64)
    got = realised_metrics(y, s, 0.5)
    ref = naive.realised(y, s, 0.5)
    for m in ESTIMATED_METRICS:
        assert got[m] == pytest.approx(ref[m], abs=1e-12), m


@given(
    s=hnp.arrays(np.float64, st.integers(1, 200), elements=st.floats(0, 1).map(lambda v: round(v, 2))),
    data=st.data(),
)
def test_isotonic_matches_sklearn(s: np.ndarray, data: st.DataObject) -> None:
    y = data.draw(hnp.arrays(np.int64, s.size, elements=st.integers(0, 1)))
    ours = fit_isotonic(s, y)
    ref = IsotonicRegression(out_of_bounds="clip").fit(s, y)
    grid = np.linspace(-0.1, 1.1, 57)
    assert np.allclose(ours.apply(grid), ref.predict(grid), atol=1e-12)
    assert np.all(np.diff(ours.apply(grid)) >= 0)


def test_platt_matches_direct_log_loss_minimum() -> None:
    rng = np.random.default_rng(6)
    s = rng.random(3000)
    y = (rng.random(3000) < 1 / (1 + np.exp(-(3 * s - 1)))).astype(np.int64)

    def loss(ab: np.ndarray) -> float:
        z = ab[0] * s + ab[1]
        return float(np.sum(np.logaddexp(0, z) - y * z))

    ref = optimize.minimize(loss, np.zeros(2), method="BFGS").x
    cal = fit_platt(s, y)
    assert (cal.a, cal.b) == pytest.approx((ref[0], ref[1]), abs=2e-3)


def test_choice_calibrates_a_miscalibrated_model_and_lowers_fresh_ece() -> None:
    rng = np.random.default_rng(7)
    true_p = rng.random(20_000)
    y = (rng.random(true_p.size) < true_p).astype(np.int64)
    served = true_p**3  # under-confident about positives: badly calibrated, same ranking
    cal = choose_calibrator(served[:10_000], y[:10_000])
    assert cal.kind != "identity"
    assert cal.ece[cal.kind] == min(cal.ece.values())
    fresh_raw = expected_calibration_error(served[10_000:], y[10_000:])
    fresh_cal = expected_calibration_error(cal.apply(served[10_000:]), y[10_000:])
    assert fresh_cal < fresh_raw / 4


def test_calibrated_model_keeps_a_low_error_map() -> None:
    rng = np.random.default_rng(8)
    p = rng.random(10_000)
    y = (rng.random(p.size) < p).astype(np.int64)
    cal = choose_calibrator(p, y)
    assert set(cal.ece) == {"identity", "isotonic", "platt"}
    assert expected_calibration_error(cal.apply(p), y) < 0.03


@pytest.mark.parametrize("fit", [fit_isotonic, fit_platt])
def test_calibrator_round_trips_through_json(fit: object) -> None:
    rng = np.random.default_rng(9)
    s = rng.random(2000)
    y = (rng.random(2000) < s**2).astype(np.int64)
    cal = fit(s, y)  # type: ignore[operator]
    back = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    grid = np.linspace(0, 1, 101)
    assert np.allclose(back.apply(grid), cal.apply(grid), atol=0)
    assert Calibrator.from_dict({"kind": "identity"}).apply(np.array([1.2, np.nan]))[0] == 1.0


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {"kind": "spline"},
        {"kind": "platt", "a": "x", "b": 0},
        {"kind": "platt", "a": -1.0, "b": 0},
        {"kind": "isotonic", "x": [0, 1], "y": [0, 1]},
        {"kind": "identity", "ece": {"identity": "low"}},
    ],
)
def test_malformed_calibration_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="calibration"):
        Calibrator.from_dict(bad)


@given(
    knots=hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(-1, 2), unique=True),
    data=st.data(),
)
def test_isotonic_apply_equals_numpy_interp(knots: np.ndarray, data: st.DataObject) -> None:
    kx = np.sort(knots)
    ky = np.sort(data.draw(hnp.arrays(np.float64, kx.size, elements=st.floats(0, 1))))
    x = data.draw(hnp.arrays(np.float64, st.integers(0, 200), elements=st.floats(-2, 3) | st.just(np.nan)))
    x = np.concatenate([x, kx])  # every knot exactly, too
    got = Calibrator("isotonic", kx, ky).apply(x)
    nan = np.isnan(x)
    assert np.all(np.isnan(got[nan]))  # NaN stays NaN (numpy's interp answers ky[0] with a single knot)
    assert np.allclose(got[~nan], np.interp(x[~nan], kx, ky), atol=1e-12)


def test_isotonic_apply_on_a_subnormal_gap_equals_numpy_interp() -> None:
    """Hypothesis found it in a fresh-clone CI run: knots 0 and 5e-324 make an infinite slope, and the kernel's
    ``slope · (x − x_j)`` gave NaN at the knot and −inf past it where ``np.interp`` guards both."""
    kx = np.array([-1.0, -0.5, 0.0, 5e-324, 1e-310, 2e-310])
    ky = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    x = np.array([-2.0, -0.75, 0.0, 5e-324, 1e-310, 1.5e-310, 3.0])
    with np.errstate(all="raise"):
        calibrator = Calibrator("isotonic", kx, ky)
    assert np.array_equal(calibrator.apply(x), np.interp(x, kx, ky))


def _calibrators() -> list[Calibrator]:
    rng = np.random.default_rng(21)
    s = rng.beta(2, 3, 3000)
    y = (rng.random(3000) < np.clip(1.4 * s - 0.1, 0, 1)).astype(np.int64)
    return [Calibrator("identity"), fit_isotonic(s, y), fit_platt(s, y)]


@pytest.mark.parametrize("kind", ["identity", "isotonic", "platt"])
def test_calibrating_in_the_pass_equals_apply_then_update(kind: str) -> None:
    """``update_scores`` and ``chunks`` calibrate each raw score inside the folding pass; they give exactly the
    states of ``calibrator.apply`` followed by ``update`` — per chunk (the last one short), with NaN and
    out-of-range scores counted missing, and with the chunks split across the worker threads (≥ 65,536 rows)."""
    cal = next(c for c in _calibrators() if c.kind == kind)
    rng = np.random.default_rng(22)
    s = rng.beta(2, 3, 70_001)
    s[[5, 500, 70_000]] = [np.nan, 1.5, -0.1]
    p = cal.apply(s)
    one = EstimationState(0.4).update_scores(s, cal)
    ref = EstimationState(0.4).update(s, p)
    exact = kind != "platt"  # numba's exp and numpy's may differ in the last bit
    _assert_same_state(one, ref, exact=exact)
    assert one.missing == 3
    states = EstimationState.chunks(s, cal, 10_000, threshold=0.4)
    assert len(states) == 8 and states[-1].n == 0 and states[-1].missing == 1
    for c, st_ in enumerate(states):
        rows = slice(c * 10_000, (c + 1) * 10_000)
        _assert_same_state(st_, EstimationState(0.4).update(s[rows], p[rows]), exact=exact)
    merged = states[0]
    for st_ in states[1:]:
        merged = merged.merge(st_)
    _assert_same_state(merged, ref, exact=False)
    with pytest.raises(ValueError, match="chunk"):
        EstimationState.chunks(s, cal, 0)


def _assert_same_state(a: EstimationState, b: EstimationState, *, exact: bool = True) -> None:
    np.testing.assert_array_equal(a.count, b.count)
    np.testing.assert_array_equal(a.ints, b.ints)
    rtol = 0.0 if exact else 1e-12
    for name in ("mass", "var_mass", "sums"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=1e-9 if not exact else 0.0)
    ea, eb = a.estimate(), b.estimate()
    for m in ESTIMATED_METRICS:
        np.testing.assert_allclose(ea[m], eb[m], rtol=1e-12 if exact else 1e-9, atol=1e-15)


@given(
    counts=hnp.arrays(np.int64, st.integers(1, 60), elements=st.integers(0, 30)),
    data=st.data(),
)
def test_jitted_roc_equals_the_numpy_histogram_formula(counts: np.ndarray, data: st.DataObject) -> None:
    """The one-pass ROC kernel against the formula written with numpy cumulative sums (ties in a bin halved)."""
    # Shares are calibrated probabilities: 0, or at least 1e-9 — a share like 1e-298 (hypothesis found one) makes the
    # reference formula's own gradient overflow, which says nothing about the kernel.
    shares = st.one_of(st.just(0.0), st.floats(1e-9, 1))
    share = data.draw(hnp.arrays(np.float64, counts.size, elements=shares))
    st_ = EstimationState(0.5, n_bins=counts.size)
    st_.count = counts
    st_.mass = counts * share
    st_.var_mass = counts * share * (1 - share)
    st_.ints = np.array([counts.sum(), 0, 0])
    auc, sd = st_.estimate()["roc_auc"]
    pos, neg = st_.mass, counts - st_.mass
    p_total, n_total = pos.sum(), neg.sum()
    if not (p_total > 0 and n_total > 0):
        assert np.isnan(auc) and np.isnan(sd)
        return
    neg_below = np.cumsum(neg) - neg
    pos_above = p_total - np.cumsum(pos)
    pn = p_total * n_total
    want = np.sum(pos * (neg_below + 0.5 * neg)) / pn
    grad = (neg_below + 0.5 * neg - pos_above - 0.5 * pos) / pn - want * (n_total - p_total) / pn
    assert auc == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert sd == pytest.approx(np.sqrt(max(np.sum(grad * grad * st_.var_mass), 0.0)), rel=1e-7, abs=1e-12)
