"""The registry's validation gates as pure functions: each kind, its edge cases, and the policy rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vigil.events.catalog.common import ColumnSpec
from vigil.registry.gates import (
    DEFAULT_POLICY,
    Candidate,
    Champion,
    GatePolicy,
    GateSpec,
    evaluate,
    passed,
    summary,
)

pytestmark = pytest.mark.unit


def cols(**types: str) -> list[ColumnSpec]:
    return [ColumnSpec(name=n, type=t) for n, t in types.items()]


def one(spec: GateSpec, candidate: Candidate, champion: Champion | None = None):  # type: ignore[no-untyped-def]
    [result] = evaluate(GatePolicy(gates=[spec]), candidate, champion)
    assert result.gate == spec.name
    assert result.kind == spec.kind
    return result


def test_metric_floor_passes_at_and_above_and_fails_below_or_missing() -> None:
    gate = GateSpec(name="auc_floor", kind="metric_floor", metric="auc", threshold=0.85)
    assert one(gate, Candidate({"auc": 0.85})).passed
    assert one(gate, Candidate({"auc": 0.9})).passed
    low = one(gate, Candidate({"auc": 0.84}))
    assert not low.passed
    assert (low.value, low.threshold, low.metric) == (0.84, 0.85, "auc")
    missing = one(gate, Candidate({"f1": 0.99}))
    assert not missing.passed
    assert missing.value is None
    assert "no metric 'auc'" in missing.detail


def test_metric_ceiling() -> None:
    gate = GateSpec(name="ece", kind="metric_ceiling", metric="calibration_error", threshold=0.05)
    assert one(gate, Candidate({"calibration_error": 0.05})).passed
    result = one(gate, Candidate({"calibration_error": 0.051}))
    assert not result.passed
    assert result.value == 0.051


def test_max_regression_against_champion_absolute_and_relative() -> None:
    gate = GateSpec(name="auc_regression", kind="max_regression", metric="auc", threshold=0.01)
    champion = Champion(version=3, metrics={"auc": 0.90})
    ok = one(gate, Candidate({"auc": 0.895}), champion)
    assert ok.passed
    assert ok.baseline == 0.90
    assert ok.baseline_version == 3
    assert ok.value == pytest.approx(0.005)
    bad = one(gate, Candidate({"auc": 0.88}), champion)
    assert not bad.passed
    assert bad.value == pytest.approx(0.02)
    assert "champion v3" in bad.detail
    # An improvement is a negative regression.
    assert one(gate, Candidate({"auc": 0.95}), champion).value == pytest.approx(-0.05)

    relative = GateSpec(
        name="latency", kind="max_regression", metric="p99_ms", threshold=0.1, higher_is_better=False, relative=True
    )
    champion_latency = Champion(version=1, metrics={"p99_ms": 100.0})
    assert one(relative, Candidate({"p99_ms": 109.0}), champion_latency).passed
    slow = one(relative, Candidate({"p99_ms": 111.0}), champion_latency)
    assert not slow.passed
    assert slow.value == pytest.approx(0.11)


def test_max_regression_without_champion_or_baseline_passes_but_missing_candidate_metric_fails() -> None:
    gate = GateSpec(name="r", kind="max_regression", metric="auc", threshold=0.0)
    first = one(gate, Candidate({"auc": 0.5}), None)
    assert first.passed
    assert first.baseline is None
    no_baseline = one(gate, Candidate({"auc": 0.5}), Champion(version=2, metrics={}))
    assert no_baseline.passed
    assert no_baseline.baseline_version == 2
    assert not one(gate, Candidate({}), Champion(version=2, metrics={"auc": 0.9})).passed


def test_fairness_gap_uses_the_absolute_gap() -> None:
    gate = GateSpec(name="dp", kind="fairness_gap", metric="fairness:dp_gap:sex", threshold=0.1, attribute="sex")
    assert one(gate, Candidate({"fairness:dp_gap:sex": -0.05})).passed
    result = one(gate, Candidate({"fairness:dp_gap:sex": -0.15}))
    assert not result.passed
    assert result.value == pytest.approx(0.15)
    assert "'sex'" in result.detail
    assert not one(gate, Candidate({})).passed


def test_schema_compat_candidate_inputs_must_be_served_to_the_champion() -> None:
    gate = GateSpec(name="input_schema", kind="schema_compat")
    champion = Champion(version=4, signature=cols(age="float", bmi="float", sex="string"))
    assert one(gate, Candidate({}, cols(age="float", bmi="float")), champion).passed  # uses fewer inputs: fine
    missing = one(gate, Candidate({}, cols(age="float", glucose="float")), champion)
    assert not missing.passed
    assert "glucose" in missing.detail
    assert missing.baseline_version == 4
    retyped = one(gate, Candidate({}, cols(age="int")), champion)
    assert not retyped.passed
    assert "age (float -> int)" in retyped.detail
    assert not one(gate, Candidate({}, []), champion).passed  # unknown inputs cannot be checked
    assert one(gate, Candidate({}, cols(x="float")), None).passed  # no champion yet
    assert one(gate, Candidate({}, cols(x="float")), Champion(version=1)).passed  # champion without signature


def test_policy_validation() -> None:
    with pytest.raises(ValidationError, match="needs `metric` and `threshold`"):
        GateSpec(name="g", kind="metric_floor", metric="auc")
    with pytest.raises(ValidationError, match="takes no"):
        GateSpec(name="g", kind="schema_compat", metric="auc")
    with pytest.raises(ValidationError, match=">= 0"):
        GateSpec(name="g", kind="fairness_gap", metric="gap", threshold=-0.1)
    with pytest.raises(ValidationError):
        GateSpec(name="g", kind="metric_floor", metric="auc", threshold=float("nan"))
    with pytest.raises(ValidationError, match="unique"):
        GatePolicy(gates=[GateSpec(name="g", kind="schema_compat"), GateSpec(name="g", kind="schema_compat")])
    with pytest.raises(ValidationError):
        GateSpec(name="../x", kind="schema_compat")


def test_evaluate_keeps_policy_order_and_summary_names_failures() -> None:
    policy = GatePolicy(
        gates=[
            GateSpec(name="auc_floor", kind="metric_floor", metric="auc", threshold=0.8),
            GateSpec(name="loss_ceiling", kind="metric_ceiling", metric="loss", threshold=0.3),
            *DEFAULT_POLICY.gates,
        ]
    )
    results = evaluate(policy, Candidate({"auc": 0.9, "loss": 0.5}, cols(a="float")), None)
    assert [r.gate for r in results] == ["auc_floor", "loss_ceiling", "input_schema"]
    assert not passed(results)
    assert summary(results).startswith("failed gates: loss_ceiling")
    assert "auc_floor" not in summary(results)
    assert passed(evaluate(GatePolicy(gates=[]), Candidate({}), None))
    assert summary([]) == "all gates passed"
