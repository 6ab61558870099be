"""The rollout state machine, pure: no database, no clock, no I/O.

A :class:`Rollout` walks its step plan and returns the events each move produces; the caller (``control.py``)
persists the new state and emits those events in one transaction. Keeping the machine pure makes every transition
unit-testable and makes the rules readable in one place:

* phases: ``progressing`` ⇄ ``paused`` → one of the terminal phases ``promoted`` / ``aborted`` / ``rolled_back``;
  a move that does not fit the current phase (or step) raises :class:`InvalidTransition` — loudly, never silently;
* ``set_weight`` applies at once and moves on; ``pause`` with a duration arms a timer (the durable ticker fires it),
  without one it pauses ``awaiting_approval`` until a human resumes it; ``analysis`` waits for the monitor's
  ``analysis.verdict`` (optionally with a timeout, after which it counts as Inconclusive);
* Argo's analysis semantics: Successful (with enough samples) moves on, Failed rolls back on its own, Inconclusive —
  or too few samples — pauses and never promotes;
* after the last step the candidate is promoted (canary at its last weight; blue-green and shadow switch at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from vigil.events import EventPayload
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
    Strategy,
    Weights,
)

MAX_STEPS = 64
PauseReason = Literal["inconclusive", "awaiting_approval", "api"]
Verdict = Literal["Successful", "Failed", "Inconclusive"]
RollbackTrigger = Literal["monitor", "analysis", "api"]


class Phase(StrEnum):
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"


TERMINAL = frozenset({Phase.PROMOTED, Phase.ABORTED, Phase.ROLLED_BACK})
ACTIVE = frozenset({Phase.PROGRESSING, Phase.PAUSED})

#: Every allowed phase change; anything else is an out-of-order move.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.PROGRESSING: frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTED, Phase.ABORTED, Phase.ROLLED_BACK}),
    Phase.PAUSED: frozenset({Phase.PROGRESSING, Phase.PROMOTED, Phase.ABORTED, Phase.ROLLED_BACK}),
    Phase.PROMOTED: frozenset(),
    Phase.ABORTED: frozenset(),
    Phase.ROLLED_BACK: frozenset(),
}


class InvalidTransition(Exception):
    """A move that does not fit the rollout's phase or current step (message safe to show to API clients)."""


class PlanError(ValueError):
    """A step plan that cannot run under its strategy."""


def default_steps(strategy: Strategy) -> list[StepSpec]:
    """The plan used when a deployment names none."""
    if strategy == "canary":
        return [
            StepSpec(kind="set_weight", weight=10),
            StepSpec(kind="analysis"),
            StepSpec(kind="set_weight", weight=50),
            StepSpec(kind="analysis"),
            StepSpec(kind="set_weight", weight=100),
        ]
    if strategy == "blue_green":
        return [StepSpec(kind="pause")]  # preview until a human approves the switch
    return [StepSpec(kind="analysis"), StepSpec(kind="pause")]  # shadow: compare, then a human decides


def validate_steps(strategy: Strategy, steps: Sequence[StepSpec]) -> list[StepSpec]:
    """Check a plan against its strategy; return it as a list (the default plan when empty)."""
    plan = list(steps) or default_steps(strategy)
    if len(plan) > MAX_STEPS:
        raise PlanError(f"a plan has at most {MAX_STEPS} steps, got {len(plan)}")
    for i, step in enumerate(plan):
        if step.kind == "set_weight":
            if strategy != "canary":
                raise PlanError(f"step {i}: set_weight only applies to canary ({strategy} switches all at once)")
            if step.weight is None or step.weight < 1:
                raise PlanError(f"step {i}: set_weight needs a weight between 1 and 100")
            if step.duration_s is not None:
                raise PlanError(f"step {i}: set_weight takes no duration (add a pause step)")
        elif step.weight is not None:
            raise PlanError(f"step {i}: only set_weight takes a weight")
    return plan


@dataclass
class Rollout:
    """One rollout of ``candidate_version`` over ``stable_version`` and the events its moves produced.

    ``timer_s`` is set when the current step waits for time (a pause's duration, an analysis timeout); the caller
    turns it into a durable ``wake_at``. ``awaiting_verdict`` is set while an analysis step listens for verdicts.
    """

    id: str
    deployment: str
    model: str
    strategy: Strategy
    stable_version: int
    candidate_version: int
    steps: list[StepSpec]
    min_samples: int = 1
    phase: Phase = Phase.PROGRESSING
    step_index: int = 0
    weight: int = 0
    pause_reason: PauseReason | None = None
    awaiting_verdict: bool = False
    timer_s: float | None = None
    timer_new: bool = False  # armed by the last move (the caller sets a fresh wake_at) vs. still running
    approved_by: str | None = None
    verdict_event_id: str | None = None
    started: bool = False
    events: list[EventPayload] = field(default_factory=list)

    # ------------------------------------------------------------------ views
    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    @property
    def mirrors(self) -> bool:
        """Whether the candidate gets a mirrored copy of stable's traffic (shadow, and blue-green's preview)."""
        return self.active and self.strategy in ("shadow", "blue_green")

    @property
    def current_step(self) -> StepSpec | None:
        return self.steps[self.step_index] if self.step_index < len(self.steps) else None

    def weights(self) -> Weights:
        return Weights(stable=100 - self.weight, candidate=self.weight)

    def take_events(self) -> list[EventPayload]:
        """Events produced since the last call, oldest first."""
        events, self.events = self.events, []
        return events

    # ------------------------------------------------------------------ moves
    def start(self, trigger: Literal["auto", "api"]) -> None:
        """Begin the rollout: announce the plan and enter step 0."""
        if self.started:
            raise InvalidTransition(f"rollout {self.id} has already started")
        self.started = True
        self.events.append(
            DeploymentRolloutStarted(
                deployment=self.deployment,
                model=self.model,
                rollout_id=self.id,
                strategy=self.strategy,
                stable_version=self.stable_version,
                candidate_version=self.candidate_version,
                steps=self.steps,
                trigger=trigger,
            )
        )
        self._run()

    def timer_fired(self) -> None:
        """The current step's time is up: a timed pause moves on; an analysis without a verdict is Inconclusive."""
        self._require(Phase.PROGRESSING, "fire a timer")
        step = self.current_step
        if self.timer_s is None or step is None:
            raise InvalidTransition(f"rollout {self.id} step {self.step_index} has no timer armed")
        self.timer_s = None
        if step.kind == "pause":
            self._next()
        else:
            self.awaiting_verdict = False
            self._pause("inconclusive", f"no analysis verdict within {step.duration_s:g}s")

    def verdict(
        self,
        verdict: Verdict,
        *,
        candidate_samples: int,
        stable_samples: int,
        step_index: int | None,
        event_id: str,
        evidence: Sequence[Evidence] = (),
        policy_version: int | None = None,
        reason: str = "",
    ) -> None:
        """Apply an analysis verdict to the analysis step that waits for it."""
        self._require(Phase.PROGRESSING, "take an analysis verdict")
        if not self.awaiting_verdict:
            raise InvalidTransition(f"rollout {self.id} step {self.step_index} is not waiting for an analysis verdict")
        if step_index is not None and step_index != self.step_index:
            raise InvalidTransition(
                f"verdict for step {step_index} arrived while rollout {self.id} is at step {self.step_index}"
            )
        if verdict == "Failed":
            self.rollback(
                "analysis",
                reason or "analysis failed",
                evidence=evidence,
                policy_version=policy_version,
                request_event_id=event_id,
            )
            return
        enough = candidate_samples >= self.min_samples and stable_samples >= self.min_samples
        if verdict == "Inconclusive" or not enough:
            self.awaiting_verdict = False
            self.timer_s = None
            detail = reason or "analysis inconclusive"
            if not enough:
                detail = (
                    f"too few samples (candidate {candidate_samples}, stable {stable_samples}; "
                    f"minimum {self.min_samples})"
                )
            self._pause("inconclusive", detail, verdict_event_id=event_id)
            return
        self.awaiting_verdict = False
        self.timer_s = None
        self.verdict_event_id = event_id
        self._next()

    def pause(self, detail: str = "") -> None:
        """Halt by hand (API)."""
        self._require(Phase.PROGRESSING, "pause")
        self.awaiting_verdict = False
        self.timer_s = None
        self._pause("api", detail)

    def resume(self, actor: str, reason: str = "") -> None:
        """Continue a paused rollout (a human with the deployer role, via the API).

        Past a manual gate (``pause`` without duration) the rollout moves to the next step and records the
        approver. After an inconclusive analysis or a pause by API, the current step is entered again: the analysis
        listens for a fresh verdict — resuming never counts as a passed analysis.
        """
        self._require(Phase.PAUSED, "resume")
        self._check(Phase.PROGRESSING)
        gate = self.pause_reason == "awaiting_approval"
        self.phase, self.pause_reason = Phase.PROGRESSING, None
        if gate:
            self.approved_by = actor
        self.events.append(
            DeploymentResumed(
                deployment=self.deployment,
                model=self.model,
                rollout_id=self.id,
                step_index=min(self.step_index, MAX_STEPS - 1),
                approved_by=actor if gate else None,
                reason=reason,
            )
        )
        if gate:
            self._next()
        else:
            self._run()

    def promote(self, actor: str | None = None) -> None:
        """Make the candidate stable now: at the end of the plan, or by hand (skipping the remaining steps)."""
        self._require_active("promote")
        self._check(Phase.PROMOTED)
        if actor is not None:
            self.approved_by = actor
        self.phase, self.pause_reason, self.awaiting_verdict, self.timer_s = Phase.PROMOTED, None, False, None
        self.weight = 100
        self.events.append(
            DeploymentPromoted(
                deployment=self.deployment,
                model=self.model,
                rollout_id=self.id,
                version=self.candidate_version,
                previous_version=self.stable_version,
                approved_by=self.approved_by,
                verdict_event_id=self.verdict_event_id,
            )
        )

    def abort(self, reason: str) -> None:
        """Stop without promotion; traffic returns to stable. The candidate is not judged failed."""
        self._require_active("abort")
        self._check(Phase.ABORTED)
        self._finish(Phase.ABORTED)
        self.events.append(
            DeploymentAborted(
                deployment=self.deployment,
                model=self.model,
                rollout_id=self.id,
                stable_version=self.stable_version,
                candidate_version=self.candidate_version,
                reason=reason[:1024],
            )
        )

    def rollback(
        self,
        trigger: RollbackTrigger,
        reason: str,
        *,
        evidence: Sequence[Evidence] = (),
        policy_version: int | None = None,
        request_event_id: str | None = None,
    ) -> None:
        """Traffic back to stable at once; the candidate failed. The evidence that triggered it is copied in."""
        self._require_active("roll back")
        self._check(Phase.ROLLED_BACK)
        self._finish(Phase.ROLLED_BACK)
        self.events.append(
            DeploymentRolledBack(
                deployment=self.deployment,
                model=self.model,
                rollout_id=self.id,
                stable_version=self.stable_version,
                failed_version=self.candidate_version,
                trigger=trigger,
                reason=reason[:1024],
                request_event_id=request_event_id,
                evidence=list(evidence)[:256],
                policy_version=policy_version,
            )
        )

    # ------------------------------------------------------------------ internals
    def _require(self, phase: Phase, what: str) -> None:
        if self.phase != phase:
            raise InvalidTransition(f"rollout {self.id} is {self.phase.value}; cannot {what}")

    def _require_active(self, what: str) -> None:
        if self.phase not in ACTIVE:
            raise InvalidTransition(f"rollout {self.id} is {self.phase.value}; cannot {what}")

    def _check(self, target: Phase) -> None:
        if target not in TRANSITIONS[self.phase]:
            raise InvalidTransition(f"rollout {self.id}: {self.phase.value} → {target.value} is not allowed")

    def _finish(self, phase: Phase) -> None:
        self.phase, self.pause_reason, self.awaiting_verdict, self.timer_s = phase, None, False, None
        self.weight = 0

    def _pause(self, reason: PauseReason, detail: str, verdict_event_id: str | None = None) -> None:
        self._check(Phase.PAUSED)
        self.phase, self.pause_reason = Phase.PAUSED, reason
        self.events.append(
            DeploymentPaused(
                deployment=self.deployment,
                model=self.model,
                rollout_id=self.id,
                step_index=min(self.step_index, MAX_STEPS - 1),
                reason=reason,
                detail=detail[:1024],
                verdict_event_id=verdict_event_id,
            )
        )

    def _next(self) -> None:
        self.step_index += 1
        self._run()

    def _run(self) -> None:
        """Enter steps from ``step_index`` until one has to wait; promote past the last one."""
        while self.phase == Phase.PROGRESSING:
            step = self.current_step
            if step is None:
                self.promote()
                return
            if step.kind == "set_weight":
                assert step.weight is not None  # validate_steps guarantees it
                self.weight = step.weight
            self.events.append(
                DeploymentRolloutStep(
                    deployment=self.deployment,
                    model=self.model,
                    rollout_id=self.id,
                    step_index=self.step_index,
                    kind=step.kind,
                    weights=self.weights(),
                    duration_s=step.duration_s,
                    stable_version=self.stable_version,
                    candidate_version=self.candidate_version,
                )
            )
            if step.kind == "set_weight":
                self.step_index += 1
                continue
            if step.kind == "pause":
                if step.duration_s is None:
                    self._pause("awaiting_approval", "manual gate: a human with the deployer role resumes or promotes")
                else:
                    self.timer_s, self.timer_new = step.duration_s, True
                return
            # analysis: listen for verdicts; a duration bounds the wait
            self.awaiting_verdict = True
            self.timer_s, self.timer_new = step.duration_s, step.duration_s is not None
            return
