"""The decision logic over window figures: drift false-positive rate on clean windows, detection of one drifted
feature, canary difference tests, minimum samples, consecutive windows, and the what-if replay."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from vigil.kernels.profile import DatasetProfile
from vigil.monitor.decisions import evaluate, replay
from vigil.monitor.figures import compute_figures
from vigil.monitor.policy import DEFAULT_POLICY, CanaryRule, DriftRule, Policy
from vigil.monitor.rules import two_proportion_p
from vigil.monitor.state import WindowState

pytestmark = pytest.mark.unit

NAMES = [f"f{i}" for i in range(5)]
REF = DatasetProfile.build(np.random.default_rng(0).normal(size=(50_000, 5)), numeric_names=NAMES)


def _fig(
    x: np.ndarray[Any, Any], start: int = 0, variant: str = "stable", version: int = 1, **extra: Any
) -> dict[str, Any]:
    st = WindowState("d", "m", version, variant, start * 60_000, (start + 1) * 60_000)
    st.numeric = REF.window(np.asfortranarray(x)).numeric
    st.predictions = x.shape[0]
    fig = compute_figures(st, REF)
    fig.update(extra)
    return fig


def _types(decisions: list[Any]) -> list[str]:
    return [d.payload.TYPE for d in decisions]


def test_false_positive_rate_over_clean_windows_is_below_one_percent() -> None:
    rng = np.random.default_rng(1)
    windows = 300
    flagged = sum(bool(evaluate(DEFAULT_POLICY, 1, _fig(rng.normal(size=(1_000, 5)), i))) for i in range(windows))
    rate = flagged / windows
    print(f"false_positive_rate_clean_windows={rate:.4f} over {windows} windows of 1000 rows")
    assert rate <= 0.01


@pytest.mark.parametrize("rows", [30, 50, 200])
def test_small_windows_stay_quiet_when_clean_and_still_catch_a_large_shift(rows: int) -> None:
    """The calibrated rule in the monitor (issue #21 item 3): with ``min_samples`` lowered to the window size, clean
    windows drawn from the reference raise drift in at most alpha of them, where the effect size alone (alpha None)
    flags most of them at 30 rows; a shift of one standard deviation in one feature is still caught."""
    rng = np.random.default_rng(rows)
    calibrated = Policy(drift=DriftRule(min_samples=rows))
    effect_only = Policy(drift=DriftRule(min_samples=rows, alpha=None))
    windows = 400
    clean = [_fig(rng.normal(size=(rows, 5)), i) for i in range(windows)]
    false_alarms = sum(bool(evaluate(calibrated, 1, fig)) for fig in clean) / windows
    assert false_alarms <= 0.01
    if rows == 30:
        assert sum(bool(evaluate(effect_only, 1, fig)) for fig in clean) / windows > 0.5  # the old rule
    shifted = rng.normal(size=(rows, 5))
    shifted[:, 2] += 1.0 if rows >= 200 else 2.0
    drift = [d.payload for d in evaluate(calibrated, 1, _fig(shifted)) if d.payload.TYPE == "drift.detected"]
    assert drift and drift[0].features == ["f2"]
    ev = drift[0].evidence[0]
    assert ev.p_value is not None and ev.p_value <= 0.01  # Holm-adjusted over the window's features


def test_figures_without_a_test_pvalue_are_judged_on_the_effect_size_as_before() -> None:
    x = np.random.default_rng(9).normal(size=(1_000, 5))
    x[:, 1] += 0.75
    fig = _fig(x)
    for f in fig["features"].values():
        f.pop("test_pvalue")  # a window stored before the p-value was kept
    drift = [d.payload for d in evaluate(DEFAULT_POLICY, 1, fig) if d.payload.TYPE == "drift.detected"]
    assert drift and drift[0].features == ["f1"]


def test_one_shifted_feature_is_detected_and_only_it_is_named() -> None:
    rng = np.random.default_rng(2)
    hits = 0
    for i in range(50):
        x = rng.normal(size=(1_000, 5))
        x[:, 3] += 0.75  # three quarters of a standard deviation (PSI ≈ 0.5)
        decisions = evaluate(DEFAULT_POLICY, 1, _fig(x, i))
        drift = [d.payload for d in decisions if d.payload.TYPE == "drift.detected"]
        if drift:
            hits += 1
            assert drift[0].features == ["f3"]
            ev = drift[0].evidence[0]
            assert ev.statistic == "psi" and ev.value > ev.threshold and ev.sample_size == 1_000
    assert hits == 50


def test_too_few_rows_never_trigger() -> None:
    x = np.random.default_rng(3).normal(size=(50, 5)) + 3.0  # wildly shifted but below min_samples
    assert evaluate(DEFAULT_POLICY, 1, _fig(x)) == []


def test_consecutive_windows_and_retrain_once_on_sustained_stable_drift() -> None:
    rng = np.random.default_rng(4)
    policy = Policy(drift=DriftRule(consecutive_windows=2))
    history: list[dict[str, Any]] = []
    seen: list[list[str]] = []
    for i in range(5):
        x = rng.normal(size=(1_000, 5))
        x[:, 0] += 1.0
        fig = _fig(x, i)
        seen.append(_types(evaluate(policy, 7, fig, history)))
        history.append(fig)
    assert seen[0] == []
    assert seen[1] == ["drift.detected"]
    assert seen[2] == ["drift.detected", "retrain.requested"]  # the third drifted window: once
    assert seen[3] == ["drift.detected"] and seen[4] == ["drift.detected"]


def _canary_pair(
    acc_c: float, acc_s: float, n: int = 2_000, p99_c: float = 20.0
) -> tuple[dict[str, Any], dict[str, Any]]:
    x = np.random.default_rng(5).normal(size=(n, 5))
    lat = lambda p99: {"count": n, "p50_ms": 10.0, "p90_ms": 15.0, "p99_ms": p99, "max_ms": p99}  # noqa: E731
    q = lambda acc: {"accuracy": acc, "correct": round(acc * n), "count": float(n)}  # noqa: E731
    stable = _fig(x, variant="stable", version=1, latency=lat(20.0), quality=q(acc_s), requests=n)
    cand = _fig(x, variant="candidate", version=2, latency=lat(p99_c), quality=q(acc_c), requests=n)
    return cand, stable


def test_less_accurate_candidate_fails_with_evidence_and_rollback() -> None:
    cand, stable = _canary_pair(0.80, 0.90)
    decisions = evaluate(DEFAULT_POLICY, 3, cand, [], stable)
    assert _types(decisions) == ["analysis.verdict", "rollback.requested"]
    verdict, rollback = decisions[0].payload, decisions[1].payload
    assert verdict.verdict == "Failed" and rollback.reason == "candidate_worse"
    ev = next(e for e in rollback.evidence if e.statistic == "accuracy.drop")
    assert ev.value == pytest.approx(0.10) and ev.baseline == 0.90 and ev.p_value < 1e-6 and ev.sample_size == 2_000
    assert rollback.policy_version == 3 and rollback.stable_version == 1 and rollback.candidate_version == 2


def test_equal_candidate_succeeds_and_small_noise_does_not_fail() -> None:
    cand, stable = _canary_pair(0.895, 0.90)
    decisions = evaluate(DEFAULT_POLICY, 1, cand, [], stable)
    assert _types(decisions) == ["analysis.verdict"]
    assert decisions[0].payload.verdict == "Successful"


def test_a_latency_ratio_without_a_real_increase_is_noise_not_a_failure() -> None:
    cand, stable = _canary_pair(0.9, 0.9, p99_c=35.0)  # 1.75× the stable p99 of 20 ms, but only +15 ms
    decisions = evaluate(DEFAULT_POLICY, 1, cand, [], stable)
    assert _types(decisions) == ["analysis.verdict"]
    assert decisions[0].payload.verdict == "Successful"
    ev = next(e for e in decisions[0].payload.evidence if e.statistic == "latency.p99_ratio")
    assert ev.value == pytest.approx(1.75) and ev.breached is False


def test_slow_candidate_fails_on_latency_ratio() -> None:
    cand, stable = _canary_pair(0.9, 0.9, p99_c=45.0)
    decisions = evaluate(DEFAULT_POLICY, 1, cand, [], stable)
    assert decisions[0].payload.verdict == "Failed"
    assert any(e.statistic == "latency.p99_ratio" and e.breached for e in decisions[1].payload.evidence)


def test_too_few_samples_is_inconclusive_and_never_rolls_back() -> None:
    cand, stable = _canary_pair(0.5, 0.9, n=100, p99_c=500.0)
    decisions = evaluate(DEFAULT_POLICY, 1, cand, [], stable)
    assert _types(decisions) == ["analysis.verdict"]
    assert decisions[0].payload.verdict == "Inconclusive"


def test_missing_quality_is_inconclusive_when_policy_requires_it() -> None:
    cand, stable = _canary_pair(0.9, 0.9)
    cand["quality"], stable["quality"] = {}, {}
    policy = Policy(canary=CanaryRule(require_quality=True))
    assert evaluate(policy, 1, cand, [], stable)[0].payload.verdict == "Inconclusive"


def test_two_proportion_test_matches_scipy() -> None:
    from scipy import stats

    p = two_proportion_p(90, 100, 80, 100)
    pooled = 170 / 200
    z = (0.9 - 0.8) / np.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert p == pytest.approx(stats.norm.sf(z))


def test_replay_applies_a_stricter_policy_without_emitting() -> None:
    rng = np.random.default_rng(6)
    figs = []
    for i in range(4):
        x = rng.normal(size=(1_000, 5))
        x[:, 2] += 0.25  # a mild shift: PSI ~0.06, below the default 0.2
        figs.append(_fig(x, i))
    assert replay(DEFAULT_POLICY, 1, figs) == []
    strict = Policy(drift=DriftRule(numeric_threshold=0.03))
    decisions = replay(strict, 2, figs)
    assert {d.payload.TYPE for d in decisions} == {"drift.detected", "retrain.requested"}
    assert all(d.payload.features == ["f2"] for d in decisions if d.payload.TYPE == "drift.detected")
    assert len({d.dedupe_key for d in decisions}) == len(decisions)
