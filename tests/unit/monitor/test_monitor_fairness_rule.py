"""The fairness rule: a gap is breached when it passes its limit on enough labelled rows *and* the chi-square test
that its rate is the same in every group rejects at the rule's ``alpha`` (kernels/fairness.py). Figures kept before
the test existed carry no p-value and are judged on the gap alone, as they were."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.monitor.policy import FairnessRule, Policy
from vigil.monitor.rules import fairness_breaches

pytestmark = pytest.mark.unit


def _fig(**fairness: float) -> dict[str, Any]:
    return {
        "deployment": "d",
        "model": "m",
        "version": 2,
        "variant": "candidate",
        "kind": "tumbling",
        "start": "2026-12-07T00:00:00Z",
        "end": "2026-12-07T00:01:00Z",
        "sensitive_attribute": "site",
        "fairness": {"count": 240.0, **fairness},
    }


POLICY = Policy(fairness=FairnessRule(attribute="site", min_samples=200))


def test_a_large_gap_that_is_noise_is_not_a_breach() -> None:
    noisy = _fig(
        demographic_parity_difference=0.25,
        demographic_parity_p_value=0.04,
        equalized_odds_difference=0.3,
        tpr_gap=0.3,
        tpr_gap_p_value=0.2,
        fpr_gap=0.1,
        fpr_gap_p_value=0.001,
    )
    assert fairness_breaches(POLICY, noisy) == {}


def test_a_large_real_gap_is_a_breach_with_its_p_value() -> None:
    real = _fig(
        demographic_parity_difference=0.25,
        demographic_parity_p_value=0.001,
        equalized_odds_difference=0.3,
        tpr_gap=0.3,
        tpr_gap_p_value=0.2,
        fpr_gap=0.25,
        fpr_gap_p_value=0.004,
    )
    out = fairness_breaches(POLICY, real)
    assert set(out) == {"demographic_parity_difference", "equalized_odds_difference"}
    assert out["demographic_parity_difference"].p_value == 0.001
    assert out["equalized_odds_difference"].p_value == 0.004  # the FPR gap: past the limit and real


def test_alpha_one_and_old_figures_judge_the_gap_alone() -> None:
    noisy = _fig(demographic_parity_difference=0.25, demographic_parity_p_value=0.5)
    gap_alone = Policy(fairness=FairnessRule(attribute="site", min_samples=200, alpha=1.0))
    assert set(fairness_breaches(gap_alone, noisy)) == {"demographic_parity_difference"}
    old = _fig(demographic_parity_difference=0.25, equalized_odds_difference=0.1)
    assert set(fairness_breaches(POLICY, old)) == {"demographic_parity_difference"}


def test_too_few_rows_or_a_small_gap_is_never_a_breach() -> None:
    assert (
        fairness_breaches(
            POLICY,
            {
                **_fig(demographic_parity_difference=0.5, demographic_parity_p_value=1e-9),
                "fairness": {"count": 100.0, "demographic_parity_difference": 0.5},
            },
        )
        == {}
    )
    assert fairness_breaches(POLICY, _fig(demographic_parity_difference=0.1, demographic_parity_p_value=1e-9)) == {}
