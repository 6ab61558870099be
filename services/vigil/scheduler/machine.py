"""The job state machine: which transitions exist, and the rules for retries and timeouts.

Pure functions, no I/O, so the rules are unit-tested on their own and the store only applies them::

    pending ──▶ scheduled ──▶ running ──▶ succeeded
       │            │  ▲          │
       │            │  └──────────┤ (re-queue: retry after a failure, or the trainer vanished)
       │            ▼             ▼
       └──────▶ cancelled      failed

``scheduled → pending`` and ``running → pending`` are the re-queue edges (a retry with backoff, or a timeout when no
trainer took the job or the trainer running it vanished). Terminal states have no way out. Anything else — an event
that arrives for a job already in another state, a late ``training.completed`` of a superseded attempt — is refused
with :class:`InvalidTransition`; the store records every refusal (``rejected_transitions``) and logs it loudly.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from vigil.events.catalog.training import JobState

STATES: Final[tuple[JobState, ...]] = get_args(JobState)
TERMINAL: Final[frozenset[JobState]] = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE: Final[frozenset[JobState]] = frozenset({"scheduled", "running"})

ALLOWED: Final[dict[JobState, frozenset[JobState]]] = {
    "pending": frozenset({"scheduled", "cancelled"}),
    "scheduled": frozenset({"running", "pending", "failed", "cancelled"}),
    "running": frozenset({"succeeded", "failed", "pending", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}


class InvalidTransition(Exception):
    """A transition the machine does not allow (or one for an attempt that is no longer current)."""

    def __init__(self, current: JobState, requested: JobState, detail: str = "") -> None:
        self.current = current
        self.requested = requested
        self.detail = detail
        super().__init__(f"job cannot go {current} → {requested}" + (f": {detail}" if detail else ""))


def check_transition(current: JobState, requested: JobState) -> None:
    """Raise :class:`InvalidTransition` unless ``current → requested`` is an edge of the machine."""
    if current not in ALLOWED or requested not in ALLOWED:
        raise InvalidTransition(current, requested, "unknown state")
    if requested not in ALLOWED[current]:
        raise InvalidTransition(current, requested)


def check_event_transition(current: JobState, current_attempt: int, requested: JobState, event_attempt: int) -> None:
    """Like :func:`check_transition`, and the event must be about the job's current attempt.

    A report about attempt 1 that arrives while attempt 2 is under way is stale: applying it would let an old
    run's outcome overwrite the live one (and a second ``training.completed`` take effect).
    """
    if event_attempt != current_attempt:
        raise InvalidTransition(
            current, requested, f"event is about attempt {event_attempt}, job is at {current_attempt}"
        )
    check_transition(current, requested)


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Delay before attempt ``attempt + 1`` after attempt ``attempt`` failed: ``base · 2^(attempt-1)``, capped."""
    if attempt < 1:
        raise ValueError("attempts count from 1")
    return float(min(max_s, base_s * (2 ** min(attempt - 1, 62))))


FailureOutcome = Literal["retry", "fail"]


def after_failure(attempt: int, max_attempts: int, retryable: bool) -> FailureOutcome:
    """What a failed attempt leads to: another attempt (``pending`` with backoff) or the end (``failed``)."""
    return "retry" if retryable and attempt < max_attempts else "fail"
