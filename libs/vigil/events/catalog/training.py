"""Training events: the scheduler requests and tracks jobs, the trainer reports runs. Topic vigil.training, key model.

A job is the scheduler's unit (idempotency key, state machine, retries); a run is one attempt of a job on a trainer
worker. Every state transition of a job is a ``job.state_changed`` event, so the audit log holds the whole history.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from vigil.events import topics
from vigil.events.catalog.common import (
    ArtifactFormat,
    ColumnSpec,
    DatasetRef,
    Digest,
    EventId,
    Hex64,
    Id,
    Metrics,
    Name,
    Opaque,
    Params,
    Record,
    Text,
    Uri,
)
from vigil.events.payload import EventPayload, register

JobState = Literal["pending", "scheduled", "running", "succeeded", "failed", "cancelled"]
Trigger = Literal["dataset", "retrain", "schedule", "manual"]
#: Where a run executes: ``local`` (a runner subprocess of the trainer's host) or ``ray`` (a task on the trainer's
#: Ray cluster).
Executor = Literal["local", "ray"]
ENTRYPOINT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]{0,199}:[A-Za-z_][A-Za-z0-9_]{0,99}$"


class Environment(Record):
    """Where a run executed: interpreter, platform and the installed package versions."""

    python: str = Field(min_length=1, max_length=64)
    platform: str = Field(min_length=1, max_length=256)
    packages: dict[Annotated[str, Field(min_length=1, max_length=128)], Annotated[str, Field(max_length=128)]] = Field(
        default_factory=dict, max_length=2048
    )


class _JobEvent(EventPayload):
    """Fields every training event carries: the model (the key), the job and the attempt."""

    TOPIC: ClassVar[str] = topics.TRAINING
    KEY_FIELD: ClassVar[str] = "model"

    model: Name
    job_id: Id
    attempt: int = Field(ge=1)

    def subject(self) -> str:
        return f"model/{self.model}/job/{self.job_id}"


@register
class TrainingRequested(_JobEvent):
    """The scheduler asks a trainer to run a job (one attempt); the trainer's consumer group picks one worker."""

    TYPE: ClassVar[str] = "training.requested"

    idempotency_key: Hex64
    entrypoint: str = Field(pattern=ENTRYPOINT_PATTERN)
    params: Params = Field(default_factory=dict)
    datasets: list[DatasetRef] = Field(min_length=1, max_length=64)
    code_version: str = Field(min_length=1, max_length=128)
    trigger: Trigger
    trigger_event_ids: list[EventId] = Field(default_factory=list, max_length=256)
    priority: int = Field(default=0, ge=-1000, le=1000)
    timeout_s: float = Field(gt=0, le=604800)
    memory_limit_mb: int | None = Field(default=None, ge=1)
    #: The policy's executor; null = the trainer's default (``trainer_executor``). Added to v1 as an optional
    #: property (a compatible change: consumers need the schema file before a producer sends it).
    executor: Executor | None = None


@register
class TrainingStarted(_JobEvent):
    """A trainer worker started a run of a job."""

    TYPE: ClassVar[str] = "training.started"

    run_id: Id
    worker: str = Field(min_length=1, max_length=256)


@register
class TrainingCompleted(_JobEvent):
    """A run finished and produced a model artifact; the registry's gates decide whether it becomes a version.

    ``reference_profile`` is the kernel library's profile of the training features (opaque here). When it is too
    large for an event it is stored as an artifact and referenced by ``reference_profile_uri``; the digest covers
    the canonical JSON of the profile in both cases.
    """

    TYPE: ClassVar[str] = "training.completed"

    run_id: Id
    params: Params = Field(default_factory=dict)
    metrics: Metrics = Field(default_factory=dict)
    artifact_digest: Digest
    artifact_uri: Uri
    artifact_format: ArtifactFormat
    artifact_size_bytes: int = Field(ge=0)
    reference_profile: Opaque | None = None
    reference_profile_uri: Uri | None = None
    reference_profile_digest: Digest | None = None
    signature: list[ColumnSpec] = Field(default_factory=list, max_length=4096)
    datasets: list[DatasetRef] = Field(min_length=1, max_length=64)
    code_version: str = Field(min_length=1, max_length=128)
    environment: Environment
    duration_s: float = Field(ge=0)


@register
class TrainingFailed(_JobEvent):
    """A run (or the attempt to start one) failed; ``retryable`` tells the scheduler whether backoff applies."""

    TYPE: ClassVar[str] = "training.failed"

    run_id: Id | None = None
    reason: Literal["error", "timeout", "memory", "worker_lost", "invalid_input", "cancelled"]
    error: Text = ""
    retryable: bool
    duration_s: float | None = Field(default=None, ge=0)


@register
class JobStateChanged(_JobEvent):
    """One validated transition of the job state machine (``from_state`` is null when the job is created)."""

    TYPE: ClassVar[str] = "job.state_changed"

    from_state: JobState | None
    to_state: JobState
    reason: Text = ""
