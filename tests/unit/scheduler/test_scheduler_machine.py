"""The job state machine, retry rules and idempotency keys, without infrastructure."""

from __future__ import annotations

import itertools

import pytest

from vigil.scheduler.machine import (
    ALLOWED,
    STATES,
    TERMINAL,
    InvalidTransition,
    after_failure,
    backoff_s,
    check_event_transition,
    check_transition,
)
from vigil.scheduler.store import idempotency_key

pytestmark = pytest.mark.unit

EDGES = {
    ("pending", "scheduled"),
    ("pending", "cancelled"),
    ("scheduled", "running"),
    ("scheduled", "pending"),
    ("scheduled", "failed"),
    ("scheduled", "cancelled"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "pending"),
    ("running", "cancelled"),
}


def test_states_are_the_contract_states() -> None:
    assert set(STATES) == {"pending", "scheduled", "running", "succeeded", "failed", "cancelled"}
    assert set(ALLOWED) == set(STATES)


@pytest.mark.parametrize(("current", "requested"), sorted(itertools.product(STATES, STATES)))
def test_exactly_the_documented_edges_are_allowed(current: str, requested: str) -> None:
    if (current, requested) in EDGES:
        check_transition(current, requested)  # type: ignore[arg-type]
    else:
        with pytest.raises(InvalidTransition):
            check_transition(current, requested)  # type: ignore[arg-type]


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_states_have_no_way_out(terminal: str) -> None:
    for target in STATES:
        with pytest.raises(InvalidTransition, match=f"{terminal} → {target}"):
            check_transition(terminal, target)  # type: ignore[arg-type]


def test_out_of_order_completion_and_skipped_start_are_refused() -> None:
    with pytest.raises(InvalidTransition):
        check_transition("scheduled", "succeeded")  # completed before started
    with pytest.raises(InvalidTransition):
        check_transition("pending", "running")  # started before it was dispatched
    with pytest.raises(InvalidTransition):
        check_transition("succeeded", "succeeded")  # a second completion


def test_reports_about_another_attempt_are_stale() -> None:
    check_event_transition("running", 2, "succeeded", 2)
    with pytest.raises(InvalidTransition, match="attempt 1, job is at 2"):
        check_event_transition("running", 2, "succeeded", 1)
    with pytest.raises(InvalidTransition):
        check_event_transition("pending", 2, "failed", 2)  # right attempt, wrong state


def test_unknown_states_are_refused() -> None:
    with pytest.raises(InvalidTransition, match="unknown state"):
        check_transition("pending", "exploded")  # type: ignore[arg-type]


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(a, 2.0, 30.0) for a in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff_s(10_000, 1.0, 60.0) == 60.0
    with pytest.raises(ValueError, match="attempts count from 1"):
        backoff_s(0, 1.0, 2.0)


def test_failure_retries_only_while_attempts_remain_and_the_failure_is_retryable() -> None:
    assert after_failure(1, 3, retryable=True) == "retry"
    assert after_failure(2, 3, retryable=True) == "retry"
    assert after_failure(3, 3, retryable=True) == "fail"
    assert after_failure(1, 3, retryable=False) == "fail"
    assert after_failure(1, 1, retryable=True) == "fail"


def test_idempotency_key_covers_inputs_and_ignores_dataset_order() -> None:
    a = {"dataset": "a", "content_digest": "sha256:" + "1" * 64, "version": 1, "uri": "file:///a"}
    b = {"dataset": "b", "content_digest": "sha256:" + "2" * 64, "version": 3, "uri": "file:///b"}
    key = idempotency_key("m", [a, b], "git:1", {"lr": 0.1})
    assert len(key) == 64
    assert key == idempotency_key("m", [b, a], "git:1", {"lr": 0.1})
    # The version number and URI do not define the content; the digest does.
    assert key == idempotency_key("m", [{**a, "version": 9, "uri": "file:///moved"}, b], "git:1", {"lr": 0.1})
    assert key != idempotency_key("other", [a, b], "git:1", {"lr": 0.1})
    assert key != idempotency_key("m", [a], "git:1", {"lr": 0.1})
    assert key != idempotency_key("m", [{**a, "content_digest": "sha256:" + "3" * 64}, b], "git:1", {"lr": 0.1})
    assert key != idempotency_key("m", [a, b], "git:2", {"lr": 0.1})
    assert key != idempotency_key("m", [a, b], "git:1", {"lr": 0.2})
