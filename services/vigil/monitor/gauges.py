"""Prometheus gauges of the latest closed tumbling window per served version: label-free estimate vs realised
performance, multivariate reconstruction error with its band, the share of out-of-distribution rows, and the domain
classifier's AUROC with the upper end of its band under no drift.

Why gauges of figures the API already serves: the Grafana drift dashboard (infra/grafana/dashboards/drift.json)
plots them over time next to the decision counters, and Prometheus only reads what ``/metrics`` exports. Set once per
closed (or revised) window, never per batch: the hot path does not touch them. Labels: deployment, version,
variant (a few series per served version), plus the metric name for performance figures.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Gauge

_WHO = ("deployment", "version", "variant")

ESTIMATED = Gauge(
    "vigil_monitor_estimated_performance",
    "Label-free (CBPE) estimate of the latest closed window, by metric (accuracy, roc_auc, ...)",
    [*_WHO, "metric"],
)
ESTIMATED_LOWER = Gauge(
    "vigil_monitor_estimated_performance_lower", "Lower end of the estimate's 3-sigma band", [*_WHO, "metric"]
)
ESTIMATED_UPPER = Gauge(
    "vigil_monitor_estimated_performance_upper", "Upper end of the estimate's 3-sigma band", [*_WHO, "metric"]
)
REALISED = Gauge(
    "vigil_monitor_realised_performance",
    "Realised figure of the latest closed window from its labels (absent until labels arrive), by metric",
    [*_WHO, "metric"],
)
MV_ERROR = Gauge(
    "vigil_monitor_multivariate_error", "Mean PCA reconstruction error of the latest closed window", list(_WHO)
)
MV_LOWER = Gauge("vigil_monitor_multivariate_error_lower", "Lower end of the reconstruction error's band", list(_WHO))
MV_UPPER = Gauge("vigil_monitor_multivariate_error_upper", "Upper end of the reconstruction error's band", list(_WHO))
OOD_RATIO = Gauge(
    "vigil_monitor_ood_rows_ratio", "Share of the latest closed window's rows out of distribution", list(_WHO)
)
OOD_REFERENCE_RATIO = Gauge(
    "vigil_monitor_ood_reference_ratio", "Share of the reference's own rows flagged by the same OOD rule", list(_WHO)
)

DC_AUROC = Gauge(
    "vigil_monitor_domain_classifier_auroc",
    "Domain classifier AUROC (window sample vs reference sample) of the latest closed window; 0.5 = no drift",
    list(_WHO),
)
DC_UPPER = Gauge(
    "vigil_monitor_domain_classifier_auroc_upper", "Upper end of the AUROC's 3-sigma band under no drift", list(_WHO)
)


def export_window(fig: dict[str, Any]) -> None:
    """Set the gauges from a tumbling window's figures (figures.py); blocks the window lacks are left as they were."""
    who = (str(fig["deployment"]), str(fig["version"]), str(fig["variant"]))
    est = fig.get("estimated") or {}
    for metric, m in (est.get("metrics") or {}).items():
        ESTIMATED.labels(*who, metric).set(m["value"])
        ESTIMATED_LOWER.labels(*who, metric).set(m["lower"])
        ESTIMATED_UPPER.labels(*who, metric).set(m["upper"])
    realised = {k: v for k, v in (fig.get("quality") or {}).items() if k in ("accuracy", "roc_auc")}
    for metric, m in (est.get("metrics") or {}).items():
        if m.get("realised") is not None:
            realised[metric] = m["realised"]
    for metric, value in realised.items():
        REALISED.labels(*who, metric).set(value)
    mv = fig.get("multivariate") or {}
    if mv.get("error") is not None:
        MV_ERROR.labels(*who).set(mv["error"])
        MV_LOWER.labels(*who).set(mv["lower"])
        MV_UPPER.labels(*who).set(mv["upper"])
    if mv.get("ood_share") is not None:
        OOD_RATIO.labels(*who).set(mv["ood_share"])
    if mv.get("ood_reference_share") is not None:
        OOD_REFERENCE_RATIO.labels(*who).set(mv["ood_reference_share"])
    dc = mv.get("domain_classifier") or {}
    if dc.get("auroc") is not None:
        DC_AUROC.labels(*who).set(dc["auroc"])
        DC_UPPER.labels(*who).set(dc["upper"])
