"""Monitoring policies: what counts as drift, an SLO breach, a worse candidate or unfair, and what to do about it.

A policy belongs to one deployment and is versioned (every change is a new row; decisions name the version that
judged them). With no stored policy a deployment is judged by :data:`DEFAULT_POLICY` (version 1 of nothing stored
is reported as ``policy_version = 1``). Thresholds are on the statistics the kernels compute; minimum sample counts
guard every rule, and too few samples never trigger anything (a canary verdict is then ``Inconclusive``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vigil.service.bounds import INT_MAX, SafeText

RollbackReason = Literal["candidate_worse", "slo_breach", "fairness_breach"]
_ALL_REASONS: tuple[RollbackReason, ...] = ("candidate_worse", "slo_breach", "fairness_breach")
DriftStatistic = Literal["psi", "js", "hellinger", "ks", "w1_norm", "chi2_pvalue"]
EstimatedMetric = Literal["accuracy", "roc_auc", "f1", "precision", "recall"]
#: What a clearly worse label-free estimate does: nothing (``off``, the default); ``rollback`` — a candidate's verdict
#: is Failed and, when ``candidate_worse`` is in ``rollback_on``, it is rolled back; ``retrain`` — a retrain is
#: requested (candidate: its verdict is held Inconclusive; stable: when its band is below the floor); ``alert`` —
#: a candidate's verdict is held Inconclusive (the rollout pauses, never promotes) with the estimate as evidence.
EstimatedAction = Literal["off", "rollback", "retrain", "alert"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DriftRule(_Part):
    """Per-feature drift: ``statistic > threshold`` (``chi2_pvalue``: ``p < threshold``) on enough rows, and — unless
    ``alpha`` is None — the feature's test (KS for numeric features, an exact per-category test for categorical ones)
    rejecting "no drift" after a Holm correction across the features judged in the window, at family-wise level
    ``alpha``. The effect size alone flags clean windows at small sample sizes (PSI's expectation under no drift
    grows like (bins − 1)(1/n + 1/m)); the test keeps the false-alarm rate per window at or below ``alpha`` at every
    size (docs/kernels.md, "Calibrated alarms")."""

    numeric_statistic: DriftStatistic = "psi"
    numeric_threshold: float = Field(default=0.2, gt=0)
    categorical_statistic: Literal["psi", "js", "hellinger", "chi2_pvalue"] = "psi"
    categorical_threshold: float = Field(default=0.2, gt=0)
    prediction_threshold: float = Field(default=0.2, gt=0)  # PSI of the prediction histogram
    min_samples: int = Field(default=200, ge=1, le=INT_MAX)
    alpha: float | None = Field(default=0.01, gt=0, lt=0.5)
    consecutive_windows: int = Field(default=1, ge=1, le=100)
    #: Also flag the window (as feature ``multivariate``) when its mean PCA reconstruction error lies outside the
    #: reference band, on at least ``min_samples`` rows. Off by default: on clean windows from skewed features the
    #: band let up to 1.2 % of windows out (docs/monitor.md, "Multivariate drift and OOD"), above ``alpha``.
    multivariate: bool = False
    #: Also flag the window (as feature ``domain_classifier``) when the domain classifier judged it drifted (AUROC
    #: above 0.55 and 3 null deviations above 0.5) on a sample of at least ``min_samples`` rows. Off by default:
    #: a second opinion to read beside the others before it acts (docs/monitor.md, "Multivariate drift and OOD").
    domain_classifier: bool = False
    # None = every feature of the reference profile
    features: Annotated[list[Annotated[SafeText, Field(max_length=256)]], Field(max_length=4096)] | None = None


class SloRule(_Part):
    """Service-level objectives per window; null disables one."""

    latency_p99_ms: float | None = Field(default=None, gt=0)
    error_rate_max: float | None = Field(default=None, gt=0, le=1)
    min_requests: int = Field(default=100, ge=1, le=INT_MAX)
    consecutive_windows: int = Field(default=1, ge=1, le=100)


GroupName = Annotated[SafeText, Field(min_length=1, max_length=256)]


class FairnessRule(_Part):
    """Group gaps on a sensitive (categorical) attribute, over labelled rows."""

    attribute: Annotated[SafeText, Field(max_length=256)] | None = None
    #: The attribute's groups, in order (others count as "other"). Needed when the attribute is not a categorical
    #: column of the version's reference profile — a protected attribute kept out of the model's features, logged by
    #: the gateway from the deployment's ``logged_attributes`` (monitor/groups.py); without it, the reference's
    #: categories are the groups.
    groups: Annotated[list[GroupName], Field(max_length=64)] | None = None
    max_demographic_parity_difference: float = Field(default=0.2, gt=0, le=1)
    max_equalized_odds_difference: float = Field(default=0.2, gt=0, le=1)
    min_samples: int = Field(default=200, ge=1, le=INT_MAX)
    #: A gap is breached only when it passes its limit *and* the chi-square test that its rate is the same in every
    #: group rejects at this level (kernels/fairness.py): a gap over a few hundred rows is mostly noise otherwise.
    #: 1 judges the gap alone (the rule before the test existed).
    alpha: float = Field(default=0.01, gt=0, le=1)

    @field_validator("groups")
    @classmethod
    def _distinct(cls, groups: list[str] | None) -> list[str] | None:
        if groups is not None and len(set(groups)) != len(groups):
            raise ValueError("groups must be distinct")
        return groups


class CanaryRule(_Part):
    """Candidate vs stable in the same window: difference tests, not only absolute thresholds."""

    min_samples: int = Field(default=200, ge=1, le=INT_MAX)  # predictions per variant
    min_labels: int = Field(default=100, ge=1, le=INT_MAX)  # labels per variant before accuracy is judged
    #: One-sided tests: the error-rate test of each window; for accuracy, with ``quality_scope`` ``rollout``, the
    #: chance that a candidate as accurate as stable is ever judged worse over its whole rollout.
    alpha: float = Field(default=0.01, gt=0, lt=0.5)
    max_accuracy_drop: float = Field(default=0.02, ge=0, le=1)  # and the drop must exceed this (effect size)
    #: What the accuracy test judges. ``rollout``: the labels accumulated since the candidate began serving (its
    #: episode), one stratum per window — a Cochran–Mantel–Haenszel test, so a population that moves between
    #: windows never reads as a difference — and the k-th judgement of the rollout at level ``alpha``·6/(π²k²), so
    #: the levels of all its judgements (revisions aside) add up to at most ``alpha``. ``window``: each window
    #: alone at level ``alpha``, as every canary was judged before this option — each window of a rollout is another
    #: chance for a good candidate to fail (~1 % each), and one Failed window rolls it back (docs/monitor.md,
    #: "Canary accuracy over the rollout").
    quality_scope: Literal["rollout", "window"] = "rollout"
    max_error_rate_increase: float = Field(default=0.01, ge=0, le=1)
    max_latency_p99_ratio: float = Field(default=1.5, gt=1)  # candidate p99 / stable p99
    #: …and the p99 must also grow by more than this (effect size): a p99 over a few hundred rows is the max of a
    #: few requests' latencies, so a 2× ratio between 3 ms and 6 ms is noise, not a regression.
    min_latency_increase_ms: float = Field(default=20.0, ge=0)
    require_quality: bool = False  # True: no labels yet = Inconclusive instead of judging latency/errors only


class EstimatedRule(_Part):
    """Label-free performance estimates (CBPE, from calibrated served scores) judged before labels arrive.

    Only used when ``actions.on_estimated`` is not ``off``, and only while the window has fewer realised labels than
    ``canary.min_labels`` per variant — once labels arrive, the realised figure decides. "Clearly worse" means the
    estimate's whole ±3σ band lies below the stable version's figure (realised if it has enough labels, else its
    estimate) and the point estimate is more than ``max_drop`` below it; or the band lies below ``min_value``."""

    metric: EstimatedMetric = "accuracy"
    min_samples: int = Field(default=500, ge=1, le=INT_MAX)  # estimated predictions per variant
    max_drop: float = Field(default=0.02, ge=0, le=1)
    min_value: float | None = Field(default=None, gt=0, le=1)


class Actions(_Part):
    """Which decisions turn into actions."""

    rollback_on: list[RollbackReason] = Field(default_factory=lambda: list(_ALL_REASONS))
    retrain_on_drift_windows: int | None = Field(default=3, ge=1, le=1000)  # consecutive drifted stable windows
    retrain_min_accuracy: float | None = Field(default=None, gt=0, le=1)  # stable accuracy below → retrain
    on_estimated: EstimatedAction = "off"  # act on label-free estimates (see EstimatedAction / EstimatedRule)


class Policy(_Part):
    """One deployment's monitoring policy (the body stored per version)."""

    drift: DriftRule = DriftRule()
    slo: SloRule = SloRule()
    fairness: FairnessRule = FairnessRule()
    canary: CanaryRule = CanaryRule()
    estimated: EstimatedRule = EstimatedRule()
    actions: Actions = Actions()


DEFAULT_POLICY = Policy()
