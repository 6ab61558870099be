"""The canary's accuracy test over the rollout (``canary.quality_scope``): the stratified test against a numpy
reference and a moving population, the alpha spent per look, the false-Failed rate of a good candidate over a long
rollout (the demo's chance rollbacks), the power against a worse one, and which windows are accumulated."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from scipy import stats

from vigil.events.catalog.deployments import AnalysisVerdict
from vigil.events.catalog.monitoring import RollbackRequested
from vigil.monitor.decisions import evaluate, replay, stable_peers
from vigil.monitor.policy import CanaryRule, Policy
from vigil.monitor.rules import accuracy_check, spent_alpha, stratified_drop_p, two_proportion_p

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _fig(i: int, variant: str, version: int, correct: float, labelled: float, predictions: int | None = None,
         deployment: str = "d") -> dict[str, Any]:  # fmt: skip
    """Window ``i`` (one minute each) of one variant: predictions, and labels of which ``correct`` were right."""
    served = int(labelled) if predictions is None else predictions
    quality = {"correct": float(correct), "count": float(labelled), "accuracy": correct / labelled} if labelled else {}
    return {
        "deployment": deployment,
        "model": "m",
        "version": version,
        "variant": variant,
        "kind": "tumbling",
        "start": (T0 + timedelta(minutes=i)).isoformat(),
        "end": (T0 + timedelta(minutes=i + 1)).isoformat(),
        "predictions": served,
        "requests": served,
        "errors": 0,
        "quality": quality,
    }


ROLLOUT = Policy(canary=CanaryRule(min_samples=100, min_labels=50))
WINDOW = Policy(canary=CanaryRule(min_samples=100, min_labels=50, quality_scope="window"))


def _cmh_reference(strata: list[tuple[float, float, float, float]]) -> float:
    """One-sided CMH p-value, written from the textbook formula over 2×2 tables (stable/candidate × right/wrong)."""
    tables = np.array([[[a, n1 - a], [c, n2 - c]] for a, n1, c, n2 in strata], dtype=float)
    n1, n2 = tables[:, 0].sum(axis=1), tables[:, 1].sum(axis=1)
    m1 = tables[:, :, 0].sum(axis=1)
    n = n1 + n2
    expected = n1 * m1 / n
    var = n1 * n2 * m1 * (n - m1) / (n**2 * (n - 1))
    return float(stats.norm.sf((tables[:, 0, 0].sum() - expected.sum()) / math.sqrt(var.sum())))


def test_one_window_is_the_pooled_test_and_several_match_the_cmh_reference() -> None:
    drop, p = stratified_drop_p([(230.0, 300.0, 205.0, 280.0)])
    pooled = two_proportion_p(230, 300, 205, 280)
    n = 580
    assert drop == pytest.approx(230 / 300 - 205 / 280)
    assert stats.norm.isf(p) == pytest.approx(stats.norm.isf(pooled) * math.sqrt((n - 1) / n))
    rng = np.random.default_rng(3)
    for _ in range(20):
        strata = []
        for _ in range(int(rng.integers(1, 8))):
            n1, n2 = (int(v) for v in rng.integers(20, 400, size=2))
            strata.append((float(rng.binomial(n1, 0.7)), float(n1), float(rng.binomial(n2, 0.68)), float(n2)))
        assert stratified_drop_p(strata)[1] == pytest.approx(_cmh_reference(strata), rel=1e-9)


def test_a_population_moving_between_windows_is_not_read_as_a_difference() -> None:
    """The first window's traffic is easy (90 % right for both), the second's hard (60 %); the candidate served
    little of the first and much of the second (a canary starting late in a window, a weight step). Pooled, the
    candidate looks 25 points worse; window by window it is exactly as good."""
    earlier = [(_fig(0, "candidate", 2, 90, 100, 200), _fig(0, "stable", 1, 900, 1000))]
    cand, stable = _fig(1, "candidate", 2, 600, 1000), _fig(1, "stable", 1, 60, 100, 200)
    assert two_proportion_p(960, 1100, 690, 1100) < 1e-30  # the pooled counts
    ev = accuracy_check(ROLLOUT, cand, stable, earlier)
    assert ev is not None and not ev.breached
    assert ev.value == pytest.approx(0.0, abs=1e-12) and ev.sample_size == 1100


def test_the_levels_of_any_number_of_looks_add_up_to_alpha() -> None:
    assert spent_alpha(0.01, 1) == pytest.approx(0.01 * 6 / math.pi**2)
    assert sum(spent_alpha(0.01, k) for k in range(1, 200_000)) <= 0.01
    assert all(spent_alpha(0.01, k + 1) < spent_alpha(0.01, k) for k in range(1, 50))


def _any_failed(policy: Policy, windows: list[tuple[int, int, int, int]]) -> int | None:
    """The first window (1-based) whose accuracy check is breached, judging the rollout window by window."""
    earlier: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for i, (sc, sn, cc, cn) in enumerate(windows):
        cand, stable = _fig(i, "candidate", 2, cc, cn), _fig(i, "stable", 1, sc, sn)
        ev = accuracy_check(policy, cand, stable, earlier)
        if ev is not None and ev.breached:
            return i + 1
        earlier.append((cand, stable))
    return None


def _rollouts(rng: np.random.Generator, n: int, windows: int, acc_s: float, acc_c: float, rows: int) -> list[Any]:
    """``n`` rollouts of ``windows`` windows of ``2 · rows`` labelled rows, each row to either variant at 50 %."""
    out = []
    for _ in range(n):
        sn = rng.binomial(2 * rows, 0.5, size=windows)
        cn = 2 * rows - sn
        out.append(list(zip(rng.binomial(sn, acc_s), sn, rng.binomial(cn, acc_c), cn, strict=True)))
    return out


def test_a_good_candidate_is_rarely_failed_over_a_long_rollout() -> None:
    """The demo's chance rollbacks: 12 windows of a candidate exactly as accurate as stable (72 %, ~150 labels a
    side a window). Each window alone at alpha 1 % fails ~9 % of such rollouts (one Failed window rolls back); over
    the rollout, at most alpha."""
    rollouts = _rollouts(np.random.default_rng(7), 2000, 12, 0.72, 0.72, 150)
    per_window = sum(_any_failed(WINDOW, r) is not None for r in rollouts) / len(rollouts)
    over_rollout = sum(_any_failed(ROLLOUT, r) is not None for r in rollouts) / len(rollouts)
    print(f"false Failed over 12 windows: window scope {per_window:.4f}, rollout scope {over_rollout:.4f}")
    assert per_window > 0.04
    assert over_rollout <= 0.01


@pytest.mark.parametrize(
    ("acc_s", "acc_c", "rows", "within", "at_least"),
    [(0.69, 0.46, 200, 1, 0.98), (0.72, 0.62, 300, 4, 0.95), (0.72, 0.67, 600, 12, 0.95)],
)
def test_a_worse_candidate_is_still_failed(acc_s: float, acc_c: float, rows: int, within: int, at_least: float) -> None:
    """The demo's v2 (46 % right against 69 %) on its first window; 10 points worse within four windows of ~300
    labels a side; 5 points within twelve of ~600. (Judging each window alone at alpha catches these a little more
    often — 100 %, 98 %, 99 % — at the price of failing good candidates several times as often.)"""
    rollouts = _rollouts(np.random.default_rng(11), 400, within, acc_s, acc_c, rows)
    caught = sum(_any_failed(ROLLOUT, r) is not None for r in rollouts) / len(rollouts)
    assert caught >= at_least


def test_a_window_too_small_to_judge_adds_labels_but_no_look() -> None:
    """A rollout's first window, too small to be judged (fewer than min_samples predictions), lends its labels to
    the next one, which is then the rollout's first look (level 0.61·alpha), not its second (0.15·alpha)."""
    small = (_fig(0, "candidate", 2, 40, 55, 60), _fig(0, "stable", 1, 40, 55, 60))
    judged = (_fig(0, "candidate", 2, 40, 55, 120), _fig(0, "stable", 1, 40, 55, 120))
    cand, stable = _fig(1, "candidate", 2, 188, 300), _fig(1, "stable", 1, 222, 300)
    _, p = stratified_drop_p([(40, 55, 40, 55), (222, 300, 188, 300)])
    assert spent_alpha(0.01, 2) < p < spent_alpha(0.01, 1)
    first_look = accuracy_check(ROLLOUT, cand, stable, [small])
    second_look = accuracy_check(ROLLOUT, cand, stable, [judged])
    assert first_look is not None and first_look.breached and first_look.sample_size == 355
    assert second_look is not None and not second_look.breached
    assert accuracy_check(ROLLOUT, *small) is None  # and the small window itself judges nothing


def test_the_promoted_version_is_compared_with_the_old_stable_not_with_itself() -> None:
    old, new, cand = _fig(5, "stable", 1, 70, 100), _fig(5, "stable", 3, 80, 100), _fig(5, "candidate", 3, 70, 100)
    at = datetime.fromisoformat(old["start"])
    assert stable_peers([old, new, cand], 3)[at] is old
    assert stable_peers([old, new, cand], 4)[at] is new  # a later candidate is compared with the newest stable


def test_only_the_current_rollout_is_accumulated() -> None:
    """Two rollouts of v2, a window apart: the first (v2 far worse) is rolled back; the second (v2 fixed, as good
    as stable) is judged on its own windows' labels only — the first rollout's do not follow it."""
    windows = [
        _fig(0, "stable", 1, 210, 300), _fig(0, "candidate", 2, 120, 300),
        _fig(1, "stable", 1, 210, 300), _fig(1, "candidate", 2, 120, 300),
        _fig(2, "stable", 1, 420, 600),
        _fig(3, "stable", 1, 210, 300), _fig(3, "candidate", 2, 212, 300),
        _fig(4, "stable", 1, 210, 300), _fig(4, "candidate", 2, 209, 300),
    ]  # fmt: skip
    decisions = replay(ROLLOUT, 1, windows)
    rollbacks = [d.payload for d in decisions if isinstance(d.payload, RollbackRequested)]
    assert [r.window.start for r in rollbacks] == [T0]
    verdicts = [d.payload for d in decisions if isinstance(d.payload, AnalysisVerdict)]
    assert [v.verdict for v in verdicts] == ["Failed", "Failed", "Successful", "Successful"]
    last = next(e for e in verdicts[-1].evidence if e.statistic == "accuracy.drop")
    assert last.sample_size == 600  # windows 3 and 4, not 0 and 1
    # the live path's call, with the stable windows it reads from Postgres, decides the same
    history = [windows[1], windows[3], windows[6]]  # the candidate's earlier windows, as store.history reads them
    peers = stable_peers(windows, 2)
    live = evaluate(ROLLOUT, 1, windows[8], history, peers[datetime.fromisoformat(windows[7]["start"])], peers=peers)
    assert [d.payload for d in live if isinstance(d.payload, AnalysisVerdict)] == [verdicts[-1]]
