"""Model events: the registry's gates turn a training run into a version (or reject it), and aliases move.

Topic vigil.models, key model. Versions are immutable once registered; an alias change records the version it moved
from, so "what did ``champion`` point to at time T" is answered by replaying these events.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from vigil.events import topics
from vigil.events.catalog.common import (
    NAME_PATTERN,
    ArtifactFormat,
    ColumnSpec,
    DatasetRef,
    Digest,
    Id,
    Key,
    Labels,
    Metrics,
    Name,
    Opaque,
    Params,
    Record,
    Text,
    Uri,
    Version,
)
from vigil.events.payload import EventPayload, register

#: ``artifact`` is the registry's own check of the artifact (an ONNX graph's size, external data, operator
#: domains); it is not configurable and runs before the policy's gates.
GateKind = Literal["metric_floor", "metric_ceiling", "max_regression", "fairness_gap", "schema_compat", "artifact"]


class GateResult(Record):
    """The outcome of one validation gate, with the figures it compared.

    ``baseline`` is the champion's value (for ``max_regression``); ``value`` and ``threshold`` are null for gates
    that are not numeric (``schema_compat``), whose ``detail`` says what was incompatible.
    """

    gate: Key
    kind: GateKind
    metric: Key | None = None
    value: float | None = None
    threshold: float | None = None
    baseline: float | None = None
    baseline_version: Version | None = None
    passed: bool
    detail: Text = ""


class _ModelEvent(EventPayload):
    TOPIC: ClassVar[str] = topics.MODELS
    KEY_FIELD: ClassVar[str] = "model"

    model: Name


@register
class ModelVersionRegistered(_ModelEvent):
    """A model version passed its gates (or was registered by hand) and is now immutable in the registry."""

    TYPE: ClassVar[str] = "model.version.registered"

    version: Version
    source: Literal["training", "manual"]
    job_id: Id | None = None
    run_id: Id | None = None
    params: Params = Field(default_factory=dict)
    metrics: Metrics = Field(default_factory=dict)
    artifact_digest: Digest
    artifact_uri: Uri
    artifact_format: ArtifactFormat
    reference_profile: Opaque | None = None
    reference_profile_uri: Uri | None = None
    reference_profile_digest: Digest | None = None
    signature: list[ColumnSpec] = Field(default_factory=list, max_length=4096)
    datasets: list[DatasetRef] = Field(default_factory=list, max_length=64)
    code_version: str | None = Field(default=None, min_length=1, max_length=128)
    tags: Labels = Field(default_factory=dict)
    description: Text = ""
    gates: list[GateResult] = Field(default_factory=list, max_length=64)
    gate_policy_version: int | None = Field(default=None, ge=1)
    #: What the registry read from the artifact (ONNX graph signature, see ``vigil.modelformat.GraphSignature``).
    artifact_signature: Opaque | None = None

    def subject(self) -> str:
        return f"model/{self.model}/v{self.version}"


@register
class ModelVersionRejected(_ModelEvent):
    """A training run failed at least one gate; no version was created. ``gates`` holds every gate evaluated."""

    TYPE: ClassVar[str] = "model.version.rejected"

    job_id: Id | None = None
    run_id: Id
    artifact_digest: Digest
    metrics: Metrics = Field(default_factory=dict)
    gates: list[GateResult] = Field(min_length=1, max_length=64)
    gate_policy_version: int = Field(ge=1)
    reason: Text

    def subject(self) -> str:
        return f"model/{self.model}/run/{self.run_id}"


@register
class ModelAliasChanged(_ModelEvent):
    """An alias was set, moved or deleted (``to_version`` null). ``deployment`` names the rollout that moved it."""

    TYPE: ClassVar[str] = "model.alias.changed"

    alias: str = Field(pattern=NAME_PATTERN)
    from_version: Version | None
    to_version: Version | None
    cause: Literal["api", "promotion", "rollback"]
    deployment: Name | None = None
    reason: Text = ""

    def subject(self) -> str:
        return f"model/{self.model}/alias/{self.alias}"
