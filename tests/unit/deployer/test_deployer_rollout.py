"""The rollout state machine: plans, steps, analysis semantics, manual gates, and out-of-order moves refused."""

from __future__ import annotations

import pytest

from vigil.deployer.rollout import (
    TERMINAL,
    TRANSITIONS,
    InvalidTransition,
    Phase,
    PlanError,
    Rollout,
    default_steps,
    validate_steps,
)
from vigil.events.catalog.common import Evidence
from vigil.events.catalog.deployments import (
    DeploymentAborted,
    DeploymentPaused,
    DeploymentPromoted,
    DeploymentResumed,
    DeploymentRolledBack,
    DeploymentRolloutStarted,
    DeploymentRolloutStep,
    StepSpec,
)

pytestmark = pytest.mark.unit


def sw(weight: int) -> StepSpec:
    return StepSpec(kind="set_weight", weight=weight)


def pause(duration: float | None = None) -> StepSpec:
    return StepSpec(kind="pause", duration_s=duration)


def analysis(duration: float | None = None) -> StepSpec:
    return StepSpec(kind="analysis", duration_s=duration)


def make(steps: list[StepSpec], strategy: str = "canary", min_samples: int = 50) -> Rollout:
    return Rollout(
        id="r1",
        deployment="churn",
        model="churn-model",
        strategy=strategy,  # type: ignore[arg-type]
        stable_version=1,
        candidate_version=2,
        steps=validate_steps(strategy, steps),  # type: ignore[arg-type]
        min_samples=min_samples,
    )


def ok(r: Rollout, *, step: int | None = None, samples: int = 100, event_id: str = "v1") -> None:
    r.verdict("Successful", candidate_samples=samples, stable_samples=samples, step_index=step, event_id=event_id)


def test_canary_walks_its_weights_and_promotes() -> None:
    r = make([sw(10), analysis(), sw(50), pause(30), sw(100)])
    r.start("auto")
    events = r.take_events()
    assert isinstance(events[0], DeploymentRolloutStarted)
    steps = [e for e in events if isinstance(e, DeploymentRolloutStep)]
    assert [(s.step_index, s.kind, s.weights.candidate) for s in steps] == [(0, "set_weight", 10), (1, "analysis", 10)]
    assert r.awaiting_verdict and r.weight == 10 and r.phase == Phase.PROGRESSING

    ok(r, step=1, event_id="verdict-1")
    events = r.take_events()
    assert [(e.step_index, e.kind, e.weights.candidate) for e in events] == [(2, "set_weight", 50), (3, "pause", 50)]
    assert r.timer_s == 30 and r.timer_new

    r.timer_fired()
    events = r.take_events()
    assert isinstance(events[0], DeploymentRolloutStep) and events[0].weights.candidate == 100
    promoted = events[-1]
    assert isinstance(promoted, DeploymentPromoted)
    assert promoted.version == 2 and promoted.previous_version == 1 and promoted.verdict_event_id == "verdict-1"
    assert promoted.approved_by is None
    assert r.phase == Phase.PROMOTED


def test_failed_analysis_rolls_back_by_itself_with_the_evidence() -> None:
    r = make([sw(10), analysis()])
    r.start("auto")
    evidence = Evidence(statistic="auc", value=0.61, threshold=0.7, operator="lt", breached=True, sample_size=500)
    r.verdict(
        "Failed",
        candidate_samples=500,
        stable_samples=500,
        step_index=1,
        event_id="bad",
        evidence=[evidence],
        policy_version=3,
    )
    rolled = r.take_events()[-1]
    assert isinstance(rolled, DeploymentRolledBack)
    assert rolled.trigger == "analysis" and rolled.evidence == [evidence] and rolled.policy_version == 3
    assert rolled.request_event_id == "bad" and rolled.failed_version == 2 and rolled.stable_version == 1
    assert r.phase == Phase.ROLLED_BACK and r.weight == 0


@pytest.mark.parametrize(
    ("verdict", "samples"),
    [("Inconclusive", 1000), ("Successful", 10)],  # an explicit Inconclusive, and a "success" on too few samples
)
def test_inconclusive_or_too_few_samples_pauses_and_never_promotes(verdict: str, samples: int) -> None:
    r = make([sw(10), analysis(), sw(100)], min_samples=50)
    r.start("auto")
    r.take_events()
    r.verdict(verdict, candidate_samples=samples, stable_samples=1000, step_index=1, event_id="v")  # type: ignore[arg-type]
    paused = r.take_events()
    assert len(paused) == 1 and isinstance(paused[0], DeploymentPaused)
    assert paused[0].reason == "inconclusive" and paused[0].verdict_event_id == "v"
    assert r.phase == Phase.PAUSED and r.weight == 10
    # More verdicts cannot move a paused rollout, let alone promote it.
    with pytest.raises(InvalidTransition):
        ok(r, step=1)
    # A human resume re-runs the analysis: it waits for a fresh verdict, it does not count as a pass.
    r.resume("user:alice")
    events = r.take_events()
    assert isinstance(events[0], DeploymentResumed) and events[0].approved_by is None
    assert isinstance(events[1], DeploymentRolloutStep) and events[1].step_index == 1
    assert r.awaiting_verdict and r.phase == Phase.PROGRESSING
    ok(r, step=1)
    assert isinstance(r.take_events()[-1], DeploymentPromoted)


def test_manual_gate_needs_a_human_who_is_recorded() -> None:
    r = make([sw(20), pause(), sw(100)])
    r.start("api")
    events = r.take_events()
    assert isinstance(events[-1], DeploymentPaused) and events[-1].reason == "awaiting_approval"
    # Nothing automatic passes a manual gate.
    with pytest.raises(InvalidTransition):
        r.timer_fired()
    with pytest.raises(InvalidTransition):
        ok(r)
    r.resume("user:bob", "looks good")
    events = r.take_events()
    assert isinstance(events[0], DeploymentResumed) and events[0].approved_by == "user:bob"
    promoted = events[-1]
    assert isinstance(promoted, DeploymentPromoted) and promoted.approved_by == "user:bob"


def test_analysis_timeout_counts_as_inconclusive() -> None:
    r = make([sw(10), analysis(60)])
    r.start("auto")
    assert r.timer_s == 60
    r.timer_fired()
    paused = r.take_events()[-1]
    assert isinstance(paused, DeploymentPaused) and paused.reason == "inconclusive"


def test_out_of_order_moves_are_refused() -> None:
    r = make([sw(10), analysis(), sw(50), analysis(), sw(100)])
    r.start("auto")
    with pytest.raises(InvalidTransition, match=r"step 3 arrived while .* step 1"):
        ok(r, step=3)  # a verdict for a later step
    with pytest.raises(InvalidTransition, match="no timer"):
        r.timer_fired()
    with pytest.raises(InvalidTransition, match="already started"):
        r.start("auto")
    with pytest.raises(InvalidTransition, match="cannot resume"):
        r.resume("user:x")
    r.abort("operator changed their mind")
    assert isinstance(r.take_events()[-1], DeploymentAborted)
    for move in (
        lambda: r.promote("user:x"),
        lambda: r.rollback("api", "late"),
        lambda: r.abort("again"),
        lambda: r.pause(),
        lambda: ok(r),
    ):
        with pytest.raises(InvalidTransition, match="aborted"):
            move()
    assert r.take_events() == []  # refused moves emit nothing


def test_transition_table_is_closed_at_terminal_phases() -> None:
    for phase in TERMINAL:
        assert TRANSITIONS[phase] == frozenset()
    assert Phase.PROMOTED not in TRANSITIONS[Phase.PROMOTED]
    assert set(TRANSITIONS) == set(Phase)


def test_pause_and_resume_by_api_reenters_the_step() -> None:
    r = make([sw(10), pause(120), sw(100)])
    r.start("auto")
    r.take_events()
    r.pause("maintenance window")
    assert r.phase == Phase.PAUSED and r.pause_reason == "api" and r.timer_s is None
    paused = r.take_events()
    assert len(paused) == 1 and isinstance(paused[0], DeploymentPaused) and paused[0].reason == "api"
    r.resume("user:carol")
    events = r.take_events()
    assert isinstance(events[0], DeploymentResumed) and events[0].approved_by is None
    assert r.timer_s == 120 and r.timer_new  # the pause's timer starts again


def test_blue_green_and_shadow_switch_at_once() -> None:
    for strategy in ("blue_green", "shadow"):
        r = make([analysis()], strategy=strategy)
        r.start("auto")
        assert r.mirrors and r.weight == 0
        assert all(e.weights.candidate == 0 for e in r.take_events() if isinstance(e, DeploymentRolloutStep))
        ok(r, step=0)
        assert isinstance(r.take_events()[-1], DeploymentPromoted)
        assert r.phase == Phase.PROMOTED and not r.mirrors


def test_plans_are_checked_against_the_strategy() -> None:
    assert validate_steps("canary", []) == default_steps("canary")
    with pytest.raises(PlanError, match="only applies to canary"):
        validate_steps("blue_green", [sw(50)])
    with pytest.raises(PlanError, match="between 1 and 100"):
        validate_steps("canary", [sw(0)])
    with pytest.raises(PlanError, match="only set_weight takes a weight"):
        validate_steps("canary", [StepSpec(kind="pause", weight=5)])
    with pytest.raises(PlanError, match="at most"):
        validate_steps("canary", [sw(1)] * 65)
    assert default_steps("blue_green") == [pause()]


def test_manual_promotion_skips_the_remaining_steps() -> None:
    r = make([sw(10), analysis(), sw(50)])
    r.start("api")
    r.take_events()
    r.promote("user:dave")
    promoted = r.take_events()
    assert len(promoted) == 1 and isinstance(promoted[0], DeploymentPromoted)
    assert promoted[0].approved_by == "user:dave"
