"""Stream events: predictions served, ground truth observed later, and operational metrics. High volume.

``prediction.logged`` is a batch for one deployment and one served version, column-major (one list per feature,
all of the same length), because the monitor's kernels bin whole columns at once and a column of numbers is far
more compact on the wire than a list of row objects. Numeric and categorical features are separate maps, so each
column has one JSON type; a missing value is ``null`` (NaN is not JSON). The gateway flushes a batch at
:data:`MAX_ROWS` rows or before the event would exceed the 1 MiB record limit, whichever comes first.

All three are keyed by deployment: predictions on vigil.predictions, labels on vigil.labels, metrics on
vigil.metrics. The auditor covers them with per-window digests, not one entry per event.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, Field, model_validator

from vigil.events import topics
from vigil.events.catalog.common import Key, Labels, Name, Record, Version
from vigil.events.payload import EventPayload, register

MAX_ROWS = 10_000
MAX_LABELS = 1_000
FeatureName = Annotated[str, Field(min_length=1, max_length=256)]
PredictionId = Annotated[str, Field(min_length=1, max_length=64)]
Category = Annotated[str, Field(max_length=256)]
Output = float | Annotated[str, Field(max_length=256)] | bool


@register
class PredictionLogged(EventPayload):
    """A batch of predictions one version of a deployment served (or, for ``shadow``, computed and did not return).

    Row ``i`` of every column belongs to ``prediction_ids[i]``. ``outputs`` is what the model returned (class or
    value); ``scores`` the positive-class probability of a classifier, used for AUC and calibration.
    ``latency_ms`` is per row: rows served by one request share that request's latency.
    ``ood`` flags rows unlike the version's training data (its reference profile's OOD rule) and ``ood_scores`` is
    each row's larger OOD score as a multiple of its threshold (> 1: beyond it); both absent when the gateway did
    not score the rows (the version has no OOD reference).
    """

    TYPE: ClassVar[str] = "prediction.logged"
    TOPIC: ClassVar[str] = topics.PREDICTIONS
    KEY_FIELD: ClassVar[str] = "deployment"

    deployment: Name
    model: Name
    version: Version
    variant: Literal["stable", "candidate", "shadow"]
    first_at: AwareDatetime
    last_at: AwareDatetime
    prediction_ids: list[PredictionId] = Field(min_length=1, max_length=MAX_ROWS)
    numeric: dict[FeatureName, Annotated[list[float | None], Field(max_length=MAX_ROWS)]] = Field(
        default_factory=dict, max_length=1024
    )
    categorical: dict[FeatureName, Annotated[list[Category | None], Field(max_length=MAX_ROWS)]] = Field(
        default_factory=dict, max_length=1024
    )
    outputs: list[Output] = Field(max_length=MAX_ROWS)
    scores: list[float | None] | None = Field(default=None, max_length=MAX_ROWS)
    latency_ms: list[Annotated[float, Field(ge=0)]] = Field(max_length=MAX_ROWS)
    ood_scores: list[Annotated[float, Field(ge=0)]] | None = Field(default=None, max_length=MAX_ROWS)
    ood: list[bool] | None = Field(default=None, max_length=MAX_ROWS)

    @model_validator(mode="after")
    def _columns_aligned(self) -> PredictionLogged:
        rows = len(self.prediction_ids)
        columns: dict[str, int] = {"outputs": len(self.outputs), "latency_ms": len(self.latency_ms)}
        if self.scores is not None:
            columns["scores"] = len(self.scores)
        if self.ood_scores is not None:
            columns["ood_scores"] = len(self.ood_scores)
        if self.ood is not None:
            columns["ood"] = len(self.ood)
        columns.update({f"numeric.{k}": len(v) for k, v in self.numeric.items()})
        columns.update({f"categorical.{k}": len(v) for k, v in self.categorical.items()})
        ragged = sorted(name for name, n in columns.items() if n != rows)
        if ragged:
            raise ValueError(f"columns {ragged[:5]} do not have {rows} rows (one per prediction id)")
        if self.last_at < self.first_at:
            raise ValueError("last_at is before first_at")
        return self

    @property
    def rows(self) -> int:
        """Number of predictions in the batch."""
        return len(self.prediction_ids)

    def subject(self) -> str:
        return f"deployment/{self.deployment}/v{self.version}"


class ObservedLabel(Record):
    """Ground truth for one prediction, joined by id (it may arrive hours after the prediction)."""

    prediction_id: PredictionId
    label: Output
    observed_at: AwareDatetime | None = None


@register
class LabelObserved(EventPayload):
    """Upstream contract: ground truth for one or a few predictions of a deployment."""

    TYPE: ClassVar[str] = "label.observed"
    TOPIC: ClassVar[str] = topics.LABELS
    KEY_FIELD: ClassVar[str] = "deployment"

    deployment: Name
    labels: list[ObservedLabel] = Field(min_length=1, max_length=MAX_LABELS)

    def subject(self) -> str:
        return f"deployment/{self.deployment}"


@register
class MetricObserved(EventPayload):
    """Upstream contract: one operational measurement of a deployment (latency, error count, …) from any server."""

    TYPE: ClassVar[str] = "metric.observed"
    TOPIC: ClassVar[str] = topics.METRICS
    KEY_FIELD: ClassVar[str] = "deployment"

    deployment: Name
    version: Version | None = None
    name: Key
    value: float
    time: AwareDatetime
    unit: str | None = Field(default=None, min_length=1, max_length=32)
    labels: Labels = Field(default_factory=dict)

    def subject(self) -> str:
        return f"deployment/{self.deployment}"
