"""From a window's state to its figures: every statistic the policies judge, as a JSON-able dict.

The figures are what is stored in Postgres (the API and the what-if replay read them) and what ``monitor.window``
carries. They hold the statistics, never verdicts: a changed policy is re-judged over the same stored figures.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

from vigil.events.catalog.common import Window
from vigil.events.catalog.monitoring import (
    EstimatedPerformance,
    FeatureDrift,
    LatencyFigures,
    MonitorWindow,
    MultivariateDrift,
)
from vigil.kernels.drift import categorical_drift
from vigil.kernels.ood import OODReference
from vigil.kernels.profile import CategoricalProfile, DatasetProfile
from vigil.kernels.report import DriftThresholds, drift_report
from vigil.monitor.estimates import estimated_figures
from vigil.monitor.multivariate import multivariate_figures
from vigil.monitor.state import WindowState

Figures = dict[str, Any]

_ALL_STATS = DriftThresholds(min_rows=1)  # statistics only; verdicts are the policy's business (decisions.py)
_FEATURE_FIELDS = ("count", "missing", "psi", "ks", "ks_bound", "js", "w1", "chi2", "hellinger", "p_value")


def iso(ts: int | float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def finite(v: Any) -> float | None:
    """A figure as a float, or None when it is missing or not finite (JSON and events have no NaN)."""
    return float(v) if v is not None and math.isfinite(float(v)) else None


def _hist_profile(hist: np.ndarray[Any, Any]) -> CategoricalProfile:
    """A prediction histogram as a one-feature categorical profile (buckets = categories, last = unknown)."""
    k = hist.size - 1
    return CategoricalProfile(
        ("prediction",), (np.arange(k, dtype=np.int64),), hist.astype(np.int64), np.zeros(1, dtype=np.int64)
    )


def compute_figures(
    st: WindowState,
    reference: DatasetProfile | None,
    *,
    kind: str = "tumbling",
    baseline_hist: list[int] | None = None,
    sensitive_attribute: str | None = None,
    multivariate: OODReference | None = None,
    domain: dict[str, Any] | None = None,
    fairness_groups: list[str] | None = None,
) -> Figures:
    """Every figure of ``st``: drift vs ``reference``, prediction drift vs ``baseline_hist``, quality, latency,
    errors, fairness, the label-free performance estimate beside the realised figures (estimates.py) and, with the
    version's PCA reference, the multivariate reconstruction error and OOD share (multivariate.py), with the
    ``domain`` classifier's figures (domain.py; computed by the closer) inside that block. Missing inputs give
    missing figures (None / absent), never zeros that look like data."""
    features: dict[str, Any] = {}
    if reference is not None and (st.numeric is not None or st.categorical is not None):
        window = DatasetProfile(
            st.numeric if reference.numeric is not None else None,
            st.categorical if reference.categorical is not None else None,
        )
        if (window.numeric is None) == (reference.numeric is None) and (window.categorical is None) == (
            reference.categorical is None
        ):
            for name, rec in drift_report(reference, window, _ALL_STATS).features().items():
                features[name] = {
                    k: rec.get(k) for k in (*_FEATURE_FIELDS, "w1_norm", "chi2_pvalue", "test_pvalue", "kind")
                }
    prediction_drift = None
    hist = st.prediction_hist
    if hist is not None and baseline_hist is not None and len(baseline_hist) == hist.size:
        base = np.asarray(baseline_hist, dtype=np.int64)
        if base[:-1].sum() > 0 and hist[:-1].sum() > 0:
            d = categorical_drift(_hist_profile(base), _hist_profile(hist))
            prediction_drift = {
                "count": int(hist.sum()),
                "psi": finite(d.psi[0]),
                "js": finite(d.js[0]),
                "chi2": finite(d.chi2[0]),
                "hellinger": finite(d.hellinger[0]),
                "p_value": finite(d.chi2_pvalue[0]),
            }
    quality: dict[str, float] = {}
    cm = st.confusion.metrics()
    labelled = int(cm["count"])
    if labelled:
        quality["accuracy"] = float(cm["accuracy"])
        quality["correct"] = float(np.trace(st.confusion.counts))
        quality["count"] = float(labelled)
    if st.quality is not None and st.quality.count:
        for name, value in st.quality.metrics().items():
            if name in ("roc_auc", "ece", "brier", "log_loss", "pr_auc") and math.isfinite(value):
                quality[name] = float(value)
    latency = None
    if st.latency.count:
        s = st.latency.summary()
        latency = {
            "count": int(s["count"]),
            "p50_ms": s["p50"],
            "p90_ms": s["p90"],
            "p99_ms": s["p99"],
            "max_ms": s["max"],
        }
    served = st.requests if st.requests > 0 else st.predictions + st.errors
    error_rate = min(1.0, st.errors / served) if served > 0 else None
    fairness: dict[str, float] = {}
    if st.fairness is not None:
        for name, value in st.fairness.metrics().items():
            if math.isfinite(value):
                fairness[name] = float(value)
    mv = multivariate_figures(st, multivariate)
    if mv is not None and domain is not None:
        mv["domain_classifier"] = domain
    return {
        "deployment": st.deployment,
        "model": st.model,
        "version": st.version,
        "variant": st.variant,
        "kind": kind,
        "start": iso(st.start / 1000),
        "end": iso(st.end / 1000),
        "predictions": st.predictions,
        "labels": st.labels,
        "late_rows": st.late_rows,
        "errors": st.errors,
        "requests": served,
        "error_rate": error_rate,
        "features": features,
        "prediction_hist": hist.tolist() if hist is not None else None,
        "prediction_drift": prediction_drift,
        "quality": quality,
        "latency": latency,
        "fairness": fairness,
        "sensitive_attribute": sensitive_attribute if st.fairness is not None else None,
        #: the names of the per-group counts' codes (monitor/groups.py), as they were when the window was judged
        "fairness_groups": fairness_groups if st.fairness is not None else None,
        "reference_profile_digest": st.reference_digest,
        "estimated": estimated_figures(st),
        "multivariate": mv,
    }


def window_of(fig: Figures) -> Window:
    return Window.model_validate({"start": fig["start"], "end": fig["end"], "kind": fig["kind"]})


def window_event(fig: Figures, revision: int) -> MonitorWindow:
    """The ``monitor.window`` payload of stored figures."""
    features = {
        name: FeatureDrift(**{k: f.get(k) if k in ("count", "missing") else finite(f.get(k)) for k in _FEATURE_FIELDS})
        for name, f in fig["features"].items()
    }
    pd = fig.get("prediction_drift")
    lat = fig.get("latency")
    return MonitorWindow(
        deployment=fig["deployment"],
        model=fig["model"],
        version=fig["version"],
        variant=fig["variant"],
        window=window_of(fig),
        revision=revision,
        predictions=fig["predictions"],
        labels=fig["labels"],
        features=features,
        prediction_drift=FeatureDrift(**{k: pd.get(k) for k in ("count", "psi", "js", "chi2", "hellinger", "p_value")})
        if pd
        else None,
        quality={k: v for k, v in fig["quality"].items() if k not in ("correct",)},
        latency=LatencyFigures(**lat) if lat else None,
        errors=int(fig["errors"]),
        error_rate=fig["error_rate"],
        fairness=fig["fairness"],
        sensitive_attribute=fig.get("sensitive_attribute"),
        reference_profile_digest=fig.get("reference_profile_digest"),
        estimated=EstimatedPerformance.model_validate(fig["estimated"]) if fig.get("estimated") else None,
        multivariate=MultivariateDrift.model_validate(fig["multivariate"]) if fig.get("multivariate") else None,
    )
