"""Monitoring events: window figures per deployment × version, and the decisions the monitor takes from them.

Topic vigil.monitoring, key deployment. A decision (``drift.detected``, ``slo.breached``, ``rollback.requested``,
``retrain.requested``) always carries its evidence — statistic, value, threshold, window, sample size — and the
version of the policy that judged it, so the audit can answer "why" without re-running anything.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from vigil.events import topics
from vigil.events.catalog.common import Digest, Evidence, Id, Key, Metrics, Name, Record, Text, Version, Window
from vigil.events.payload import EventPayload, register

Variant = Literal["stable", "candidate", "shadow"]
FeatureName = Annotated[str, Field(min_length=1, max_length=256)]
Stat = Annotated[float, Field(ge=0)]


class FeatureDrift(Record):
    """Drift statistics of one feature (or of the predictions) against the version's reference profile.

    Null means "not computed" (e.g. χ² for a numeric feature). ``ks_bound`` is the error bound of the binned KS.
    """

    count: int = Field(ge=0)
    missing: int = Field(default=0, ge=0)
    psi: Stat | None = None
    ks: Stat | None = None
    ks_bound: Stat | None = None
    js: Stat | None = None
    w1: Stat | None = None
    chi2: Stat | None = None
    hellinger: Stat | None = None
    p_value: float | None = Field(default=None, ge=0, le=1)


class LatencyFigures(Record):
    """Latency quantiles of a window, from the kernel library's mergeable sketch."""

    count: int = Field(ge=0)
    p50_ms: Stat
    p90_ms: Stat
    p99_ms: Stat
    max_ms: Stat


class EstimatedMetric(Record):
    """One metric of a window estimated without labels (CBPE), its sampling band, and the realised figure once the
    window's labels arrived (null before)."""

    value: float = Field(ge=0, le=1)
    std: Stat
    lower: float = Field(ge=0, le=1)
    upper: float = Field(ge=0, le=1)
    realised: float | None = Field(default=None, ge=0, le=1)


EstimatedMetricName = Annotated[str, Field(max_length=16, pattern="^(accuracy|precision|recall|f1|roc_auc)$")]


class EstimatedPerformance(Record):
    """Label-free performance estimate of a window from its served scores, calibrated on the version's reference.

    ``count``: predictions estimated over; ``labelled``: how many of them have a label (the realised figures' base);
    ``threshold``: the decision threshold on the served score."""

    count: int = Field(ge=0)
    labelled: int = Field(default=0, ge=0)
    threshold: float = Field(ge=0, le=1)
    metrics: dict[EstimatedMetricName, EstimatedMetric] = Field(default_factory=dict, max_length=5)


class DomainClassifier(Record):
    """The domain classifier's second opinion on a closed window: the out-of-fold AUROC of a small gradient-boosted
    tree model telling ``n_window`` window rows (a uniform sample of the window's ``window_rows``) from ``n_reference``
    reference rows; 0.5 = indistinguishable. ``null_sd``: its Mann–Whitney spread under no drift, ``z`` =
    (auroc − 0.5) / null_sd, ``lower``/``upper`` = 0.5 ∓ 3·null_sd; ``drifted``: AUROC above 0.55 and z above 3.
    ``auroc`` is null when either sample is too small or the classifier could not run, with ``reason`` saying why."""

    auroc: float | None = Field(default=None, ge=0, le=1)
    null_sd: Stat | None = None
    z: float | None = None
    lower: float | None = Field(default=None, ge=0, le=1)
    upper: float | None = Field(default=None, ge=0, le=1)
    drifted: bool | None = None
    n_reference: int = Field(default=0, ge=0)
    n_window: int = Field(default=0, ge=0)
    window_rows: int = Field(default=0, ge=0)
    reason: Text | None = None


class MultivariateDrift(Record):
    """Multivariate drift and out-of-distribution rows of a window, against the version's reference PCA.

    ``error``: mean reconstruction error (standardised units) of the window's ``count`` rows; ``lower``/``upper``:
    the ±3σ band of a clean window of that many rows (from cross-fitted reference chunks; ``lower`` may be
    negative); ``drifted``: the error lies outside it. ``ood_share``: share of rows past either per-row threshold
    (reference 99.5th percentiles), beside ``ood_reference_share``, the reference's own share under the same rule.
    ``domain_classifier``: the classifier's AUROC (closed tumbling windows; absent in older events)."""

    count: int = Field(ge=0)
    error: Stat | None = None
    lower: float | None = None
    upper: float | None = None
    reference_error: Stat | None = None
    drifted: bool | None = None
    imputed: int = Field(default=0, ge=0)
    components: int = Field(default=0, ge=0)
    ood_count: int = Field(default=0, ge=0)
    ood_flagged: int = Field(default=0, ge=0)
    ood_share: float | None = Field(default=None, ge=0, le=1)
    ood_reference_share: float | None = Field(default=None, ge=0, le=1)
    domain_classifier: DomainClassifier | None = None


class _MonitorEvent(EventPayload):
    TOPIC: ClassVar[str] = topics.MONITORING
    KEY_FIELD: ClassVar[str] = "deployment"

    deployment: Name
    model: Name

    def subject(self) -> str:
        return f"deployment/{self.deployment}"


@register
class MonitorWindow(_MonitorEvent):
    """The figures of one closed window for one served version: drift, quality (once labels arrived), latency,
    errors and fairness, and — when the version's reference profile carries a calibration map — the label-free
    performance estimate beside the realised figures; when it carries a PCA reference, the multivariate
    reconstruction error with its band and the share of out-of-distribution rows. Late labels re-emit the window
    with updated quality figures (same window, higher ``revision``)."""

    TYPE: ClassVar[str] = "monitor.window"

    version: Version
    variant: Variant
    window: Window
    revision: int = Field(default=0, ge=0)
    predictions: int = Field(ge=0)
    labels: int = Field(ge=0)
    features: dict[FeatureName, FeatureDrift] = Field(default_factory=dict, max_length=1024)
    prediction_drift: FeatureDrift | None = None
    quality: Metrics = Field(default_factory=dict)
    latency: LatencyFigures | None = None
    errors: int = Field(default=0, ge=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)
    fairness: Metrics = Field(default_factory=dict)
    sensitive_attribute: FeatureName | None = None
    reference_profile_digest: Digest | None = None
    estimated: EstimatedPerformance | None = None
    multivariate: MultivariateDrift | None = None

    def subject(self) -> str:
        return f"deployment/{self.deployment}/v{self.version}"


class _Decision(_MonitorEvent):
    """Fields every monitor decision carries."""

    window: Window
    evidence: list[Evidence] = Field(min_length=1, max_length=1024)
    policy_version: int = Field(ge=1)
    consecutive_windows: int = Field(default=1, ge=1)


@register
class DriftDetected(_Decision):
    """Features of a served version drifted past the policy's thresholds (a signal; actions are separate events)."""

    TYPE: ClassVar[str] = "drift.detected"

    version: Version
    variant: Variant
    features: list[FeatureName] = Field(min_length=1, max_length=1024)
    prediction_drift: bool = False


@register
class SloBreached(_Decision):
    """A service-level objective (latency, error rate, …) was breached."""

    TYPE: ClassVar[str] = "slo.breached"

    version: Version | None = None
    slo: Key


@register
class RollbackRequested(_Decision):
    """The monitor asks the deployer to send all traffic back to stable; the deployer copies the evidence into
    ``deployment.rolled_back``."""

    TYPE: ClassVar[str] = "rollback.requested"

    rollout_id: Id | None = None
    stable_version: Version | None
    candidate_version: Version
    reason: Literal["candidate_worse", "slo_breach", "fairness_breach", "drift"]
    detail: Text = ""


@register
class RetrainRequested(_Decision):
    """Sustained drift or quality loss on the stable version: the scheduler retrains ``model`` under its policy."""

    TYPE: ClassVar[str] = "retrain.requested"

    version: Version
    reason: Literal["drift", "quality"]
    detail: Text = ""
