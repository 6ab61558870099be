"""Deployment events: the deployer's rollout state machine, and the monitor's canary analysis verdicts.

``deployment.*`` travel on vigil.deployments; ``analysis.verdict`` is produced by the monitor on vigil.monitoring.
Both are keyed by deployment, so a rollout's steps and the verdicts about it are each read in order.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from vigil.events import topics
from vigil.events.catalog.common import EventId, Evidence, Id, Name, Record, Text, Version, Window
from vigil.events.payload import EventPayload, register

Strategy = Literal["canary", "blue_green", "shadow"]
StepKind = Literal["set_weight", "pause", "analysis"]

#: A request field the gateway logs as a sensitive/segment attribute (``categorical`` of ``prediction.logged``): an
#: identifier, so it reads the same in a request body, a JSON column name and a monitor policy.
ATTRIBUTE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
#: At most this many attributes per deployment: each one is a column in every logged batch, kept for years.
MAX_LOGGED_ATTRIBUTES = 16
AttributeName = Annotated[str, Field(pattern=ATTRIBUTE_PATTERN)]


class StepSpec(Record):
    """One planned canary step: set the candidate's weight, pause (for ``duration_s``, null = until approved),
    or run an analysis."""

    kind: StepKind
    weight: int | None = Field(default=None, ge=0, le=100)
    duration_s: float | None = Field(default=None, gt=0, le=604800)


class Weights(Record):
    """Traffic split in percent; stable + candidate = 100. Shadow traffic is mirrored and not counted here."""

    stable: int = Field(ge=0, le=100)
    candidate: int = Field(ge=0, le=100)

    @model_validator(mode="after")
    def _sums_to_100(self) -> Weights:
        if self.stable + self.candidate != 100:
            raise ValueError("weights must sum to 100")
        return self


class _DeploymentEvent(EventPayload):
    TOPIC: ClassVar[str] = topics.DEPLOYMENTS
    KEY_FIELD: ClassVar[str] = "deployment"

    deployment: Name
    model: Name

    def subject(self) -> str:
        return f"deployment/{self.deployment}"


@register
class DeploymentCreated(_DeploymentEvent):
    """An endpoint was created (optionally already serving a stable version) with its rollout plan."""

    TYPE: ClassVar[str] = "deployment.created"

    strategy: Strategy
    stable_version: Version | None = None
    auto_deploy: Literal["auto", "manual"] = "manual"
    steps: list[StepSpec] = Field(default_factory=list, max_length=64)
    #: The request fields the gateway logs for this endpoint (docs/deployer.md, logged attributes); added to v1 as
    #: an optional property (a compatible change).
    logged_attributes: list[AttributeName] = Field(default_factory=list, max_length=MAX_LOGGED_ATTRIBUTES)


@register
class DeploymentRolloutStarted(_DeploymentEvent):
    """A rollout of ``candidate_version`` began (``stable_version`` null on a first deployment)."""

    TYPE: ClassVar[str] = "deployment.rollout.started"

    rollout_id: Id
    strategy: Strategy
    stable_version: Version | None
    candidate_version: Version
    steps: list[StepSpec] = Field(default_factory=list, max_length=64)
    trigger: Literal["auto", "api"]


@register
class DeploymentRolloutStep(_DeploymentEvent):
    """The rollout entered step ``step_index``; ``weights`` is the split in force from now on."""

    TYPE: ClassVar[str] = "deployment.rollout.step"

    rollout_id: Id
    step_index: int = Field(ge=0, le=63)
    kind: StepKind
    weights: Weights
    duration_s: float | None = Field(default=None, gt=0, le=604800)
    stable_version: Version | None
    candidate_version: Version


@register
class DeploymentPromoted(_DeploymentEvent):
    """The candidate became stable (all traffic). ``approved_by`` is the human who passed a manual gate, if any."""

    TYPE: ClassVar[str] = "deployment.promoted"

    rollout_id: Id | None = None
    version: Version
    previous_version: Version | None
    approved_by: str | None = Field(default=None, min_length=1, max_length=256)
    verdict_event_id: EventId | None = None


@register
class DeploymentRolledBack(_DeploymentEvent):
    """Traffic went back to ``stable_version`` and ``failed_version`` was marked failed, with the evidence that
    triggered it copied in (from ``rollback.requested``, an analysis verdict or the API)."""

    TYPE: ClassVar[str] = "deployment.rolled_back"

    rollout_id: Id | None = None
    stable_version: Version | None
    failed_version: Version
    trigger: Literal["monitor", "analysis", "api"]
    reason: Text
    request_event_id: EventId | None = None
    evidence: list[Evidence] = Field(default_factory=list, max_length=256)
    policy_version: int | None = Field(default=None, ge=1)


@register
class DeploymentAborted(_DeploymentEvent):
    """A rollout was stopped without promotion (traffic stays on / returns to stable)."""

    TYPE: ClassVar[str] = "deployment.aborted"

    rollout_id: Id
    stable_version: Version | None
    candidate_version: Version
    reason: Text


@register
class DeploymentPaused(_DeploymentEvent):
    """A rollout halted at a step: analysis was inconclusive, a manual gate awaits approval, or the API paused it."""

    TYPE: ClassVar[str] = "deployment.paused"

    rollout_id: Id
    step_index: int = Field(ge=0, le=63)
    reason: Literal["inconclusive", "awaiting_approval", "api"]
    detail: Text = ""
    verdict_event_id: EventId | None = None


@register
class DeploymentResumed(_DeploymentEvent):
    """A paused rollout continues from ``step_index``."""

    TYPE: ClassVar[str] = "deployment.resumed"

    rollout_id: Id
    step_index: int = Field(ge=0, le=63)
    approved_by: str | None = Field(default=None, min_length=1, max_length=256)
    reason: Text = ""


@register
class AnalysisVerdict(EventPayload):
    """The monitor's canary analysis for one window: candidate vs stable, with every check it made.

    Argo semantics: ``Inconclusive`` (e.g. fewer samples than the policy's minimum) pauses and never promotes.
    """

    TYPE: ClassVar[str] = "analysis.verdict"
    TOPIC: ClassVar[str] = topics.MONITORING
    KEY_FIELD: ClassVar[str] = "deployment"

    deployment: Name
    model: Name
    rollout_id: Id | None = None
    step_index: int | None = Field(default=None, ge=0, le=63)
    stable_version: Version | None
    candidate_version: Version
    verdict: Literal["Successful", "Failed", "Inconclusive"]
    window: Window
    candidate_samples: int = Field(ge=0)
    stable_samples: int = Field(ge=0)
    evidence: list[Evidence] = Field(default_factory=list, max_length=256)
    policy_version: int = Field(ge=1)
    reason: Text = ""

    def subject(self) -> str:
        return f"deployment/{self.deployment}"
