"""Pure shaping of the services' answers into what the pages show: no I/O, so unit tests can pin it down.

Charts are data for uPlot (``{"x": [unix seconds], "series": [{"label", "values"}]}``); the same figures are also
rendered as tables, so nothing is only in a picture.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

#: Monitor decisions that ask for something (an alert while their window is the latest).
ALERT_TYPES = frozenset({"rollback.requested", "retrain.requested", "drift.detected", "slo.breached"})

#: Event types the live feed shows: decisions and the steps of the loop, not reads, windows or stream digests.
FEED_TYPES = frozenset(
    {
        "data.updated",
        "dataset.version.registered",
        "training.requested",
        "training.completed",
        "training.failed",
        "model.version.registered",
        "model.version.rejected",
        "model.alias.changed",
        "deployment.created",
        "deployment.rollout.started",
        "deployment.rollout.step",
        "deployment.promoted",
        "deployment.rolled_back",
        "deployment.aborted",
        "deployment.paused",
        "deployment.resumed",
        "analysis.verdict",
        "rollback.requested",
        "retrain.requested",
        "drift.detected",
        "slo.breached",
    }
)

#: Window figures drawn per variant: (chart id, title, unit, where the value is in a window's figures; ``max_psi``
#: is the largest PSI over the window's features — how far the most shifted input moved).
_CHARTS: tuple[tuple[str, str, str, str], ...] = (
    ("traffic", "Traffic (predictions per window)", "predictions", "predictions"),
    ("accuracy", "Accuracy on live labels", "accuracy", "quality.accuracy"),
    ("roc_auc", "ROC AUC on live labels", "AUC", "quality.roc_auc"),
    ("ece", "Calibration error (ECE)", "ECE", "quality.ece"),
    ("latency_p50", "Latency p50", "ms", "latency.p50_ms"),
    ("latency_p99", "Latency p99", "ms", "latency.p99_ms"),
    ("error_rate", "Error rate", "share", "error_rate"),
    ("max_psi", "Drift: largest feature PSI", "PSI", "max_psi"),
)


def _max_psi(figures: dict[str, Any]) -> float | None:
    values = [
        float(f["psi"])
        for f in (figures.get("features") or {}).values()
        if isinstance(f, dict) and isinstance(f.get("psi"), int | float)
    ]
    return max(values) if values else None


def _dig(figures: dict[str, Any], path: str) -> float | None:
    if path == "max_psi":
        return _max_psi(figures)
    value: Any = figures
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _rate(version_health: dict[str, Any]) -> float | None:
    """Predictions per second in the version's latest window (count over the window's length)."""
    window = version_health.get("window") or {}
    try:
        seconds = _ts(window["end"]) - _ts(window["start"])
    except (KeyError, TypeError, ValueError):
        return None
    count = version_health.get("predictions")
    return count / seconds if seconds > 0 and isinstance(count, int | float) else None


def latest_per_version(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``/health`` has the latest window of each version *and variant*: a promoted candidate keeps its last
    ``candidate`` window beside its ``stable`` ones. A version's line shows its newest (stable at a tie), in the
    order ``/health`` gives them."""
    best: dict[int, dict[str, Any]] = {}
    for v in versions:
        key = ((v.get("window") or {}).get("end") or "", v.get("variant") == "stable")
        held = best.get(v["version"])
        if held is None or key > ((held.get("window") or {}).get("end") or "", held.get("variant") == "stable"):
            best[v["version"]] = v
    return [v for v in versions if best.get(v["version"]) is v]


def deployment_row(dep: dict[str, Any], health: dict[str, Any] | None) -> dict[str, Any]:
    """One overview line: versions, weights, rollout step, latest accuracy per variant, drift status."""
    rollout = dep.get("rollout")
    steps = (rollout or {}).get("steps") or dep.get("steps") or []
    served = serving(dep)
    variants = []
    for v in latest_per_version((health or {}).get("versions", [])):
        if v["version"] not in served:
            continue  # the monitor's latest window of a version no longer served (a rolled-back candidate)
        variants.append(
            {
                "version": v["version"],
                "variant": v["variant"],
                "revision": v.get("revision"),
                "window_end": (v.get("window") or {}).get("end"),
                "accuracy": (v.get("quality") or {}).get("accuracy"),
                "estimated": ((v.get("estimated") or {}).get("metrics") or {}).get("accuracy"),
                "predictions": v.get("predictions"),
                "labels": v.get("labels"),
                "drifted": v.get("drifted_features") or [],
                "p99": (v.get("latency") or {}).get("p99_ms"),
                "per_s": _rate(v),
            }
        )
    return {
        "name": dep["name"],
        "model": dep["model"],
        "strategy": dep["strategy"],
        "stable": dep.get("stable_version"),
        "candidate": dep.get("candidate_version"),
        "weights": dep.get("weights") or {"stable": 100, "candidate": 0},
        "phase": rollout["phase"] if rollout else "idle",
        "step": (rollout["step_index"] + 1) if rollout else None,
        "steps": len(steps),
        "pause_reason": rollout.get("pause_reason") if rollout else None,
        "status": (health or {}).get("status", "unknown"),
        "variants": variants,
        "drifted": sorted({f for v in variants for f in v["drifted"]}),
    }


def _why_text(payload: dict[str, Any]) -> str:
    """A monitor decision's reason in words: its reason and detail, or the features that drifted."""
    if payload.get("features"):
        return "drift on " + ", ".join(str(f) for f in payload["features"])
    parts = [str(payload[k]) for k in ("reason", "detail") if payload.get(k)]
    return " · ".join(dict.fromkeys(parts))


def serving(dep: dict[str, Any]) -> set[int]:
    """The versions a deployment serves now (stable, and the candidate while a rollout is in flight)."""
    return {v for v in (dep.get("stable_version"), dep.get("candidate_version")) if v is not None}


def possible_actions(dep: dict[str, Any]) -> list[str]:
    """The moves that fit the deployment's state (the deployer still decides): a rollout in flight may be
    promoted, paused or resumed and rolled back; after a promotion the previous stable can be brought back."""
    rollout = dep.get("rollout")
    if rollout is None:
        return ["rollback"] if dep.get("previous_version") is not None else []
    paused = rollout.get("phase") == "paused"
    return ["promote", "resume" if paused else "pause", "rollback"]


def open_alerts(health: dict[str, Any] | None, served: set[int] | None = None) -> list[dict[str, Any]]:
    """Monitor requests whose window is one of the latest windows, about a version still served (``served``;
    None: any): what still stands, not history."""
    if not health:
        return []
    latest = {v["window"]["start"] for v in health.get("versions", [])}
    out = []
    seen: set[tuple[Any, ...]] = set()
    for d in health.get("recent_decisions", []):
        if d["event_type"] not in ALERT_TYPES:
            continue
        payload = d.get("payload") or {}
        window = payload.get("window") or {}
        if window.get("start") not in latest:
            continue
        about = payload.get("version") or payload.get("candidate_version")
        if served is not None and about is not None and about not in served:
            continue
        key = (d["event_type"], about, window.get("start"))
        if key in seen:
            continue
        seen.add(key)
        out.append(
            {
                "deployment": health["deployment"],
                "type": d["event_type"],
                "version": payload.get("version") or payload.get("candidate_version"),
                "reason": _why_text(payload),
                "detail": payload.get("detail") or "",
                "event_id": d["event_id"],
                "at": d.get("created_at"),
            }
        )
    return out


def plan(dep: dict[str, Any], rollout: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The rollout plan with each step's state: done, in flight or to come (the deployment's plan when idle)."""
    steps = (rollout or {}).get("steps") or dep.get("steps") or []
    active = rollout is not None and rollout.get("finished_at") is None
    index = rollout["step_index"] if rollout else -1
    out = []
    for i, step in enumerate(steps):
        if step["kind"] == "set_weight":
            what = f"candidate at {step['weight']} %"
        elif step["kind"] == "analysis":
            what = "analysis: wait for the monitor's verdict"
        elif step["kind"] == "pause":
            what = f"pause {step['duration_s']} s" if step.get("duration_s") else "manual gate: wait for approval"
        else:
            what = step["kind"]
        if not active:
            state = "planned"
        elif i < index:
            state = "done"
        elif i == index:
            state = "in flight"
        else:
            state = "to come"
        out.append({"n": i + 1, "what": what, "state": state})
    return out


#: Decisions the deployment page lists as verdicts (drift detections are in the drift table instead).
VERDICT_TYPES = frozenset({"analysis.verdict", "rollback.requested", "retrain.requested", "slo.breached"})


def verdicts(health: dict[str, Any] | None, limit: int = 6) -> list[dict[str, Any]]:
    """The monitor's canary verdicts and requests with their evidence (statistic, value, operator, threshold)."""
    out: list[dict[str, Any]] = []
    for d in (health or {}).get("recent_decisions", []):
        if d["event_type"] not in VERDICT_TYPES or len(out) >= limit:
            continue
        payload = d.get("payload") or {}
        out.append(
            {
                "type": d["event_type"],
                "verdict": payload.get("verdict") or payload.get("reason") or "",
                "reason": _why_text(payload),
                "window": payload.get("window") or {},
                "stable": payload.get("stable_version"),
                "candidate": payload.get("candidate_version"),
                "event_id": d["event_id"],
                "at": d.get("created_at"),
                "evidence": [
                    {
                        "statistic": e.get("statistic"),
                        "feature": e.get("feature"),
                        "version": e.get("version"),
                        "value": e.get("value"),
                        "operator": e.get("operator"),
                        "threshold": e.get("threshold"),
                        "baseline": e.get("baseline"),
                        "p_value": e.get("p_value"),
                        "samples": e.get("sample_size"),
                        "breached": bool(e.get("breached")),
                    }
                    for e in payload.get("evidence") or []
                ],
            }
        )
    return out


def window_charts(windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One chart per figure, one series per version (a version keeps its series from candidate to stable),
    aligned on window ends; a window a version has no figure for is a gap."""
    ends = sorted({w["figures"]["end"] for w in windows})
    index = {end: i for i, end in enumerate(ends)}
    labels = {w["figures"]["version"]: f"v{w['figures']['version']}" for w in windows}
    charts = []
    for chart_id, title, unit, path in _CHARTS:
        series: dict[int, list[float | None]] = {v: [None] * len(ends) for v in labels}
        for w in windows:
            fig = w["figures"]
            series[fig["version"]][index[fig["end"]]] = _dig(fig, path)
        charts.append(
            {
                "id": chart_id,
                "title": title,
                "unit": unit,
                "x": [_ts(e) for e in ends],
                "ends": ends,
                "series": [{"label": labels[v], "values": vals} for v, vals in sorted(series.items())],
            }
        )
    return charts


def drift_table(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-feature drift of the newest window of each version: one row per feature, one column per version
    (PSI, KS statistic and its p-value), so versions compare side by side."""
    newest: dict[int, dict[str, Any]] = {}
    for w in windows:
        fig = w["figures"]
        if fig["version"] not in newest or fig["end"] > newest[fig["version"]]["end"]:
            newest[fig["version"]] = fig
    versions = sorted(newest)
    features = sorted({f for fig in newest.values() for f in (fig.get("features") or {})})
    rows = []
    for feature in features:
        cells = []
        for version in versions:
            stats = (newest[version].get("features") or {}).get(feature) or {}
            cells.append({"psi": stats.get("psi"), "ks": stats.get("ks"), "p_value": stats.get("p_value")})
        rows.append({"feature": feature, "cells": cells})
    return {
        "versions": [
            {"version": v, "window_end": newest[v]["end"], "count": newest[v].get("predictions")} for v in versions
        ],
        "rows": rows,
    }


def version_row(v: dict[str, Any]) -> dict[str, Any]:
    """A model version without its bulky parts (reference profile, environment)."""
    return {
        "version": v["version"],
        "created_at": v["created_at"],
        "created_by": v["created_by"],
        "metrics": v.get("metrics") or {},
        "params": v.get("params") or {},
        "gates": v.get("gates") or [],
        "datasets": v.get("datasets") or [],
        "artifact_digest": v.get("artifact_digest"),
        "artifact_format": v.get("artifact_format"),
        "aliases": v.get("aliases") or [],
        "run_id": v.get("run_id"),
        "job_id": v.get("job_id"),
        "code_version": v.get("code_version"),
    }


def feed_item(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A live-feed line for an audit entry, or None for what the feed leaves out (reads, windows, digests)."""
    if entry["event_type"] not in FEED_TYPES:
        return None
    return {
        "seq": entry["seq"],
        "type": entry["event_type"],
        "subject": entry["subject"],
        "actor": entry["actor"],
        "time": entry["event_time"],
        "event_id": entry["event_id"],
    }


def step_charts(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A training run's per-step metrics as charts: one per metric name, x = step (points without a step are
    final figures, listed elsewhere, not drawn)."""
    by_name: dict[str, list[tuple[int, float]]] = {}
    for p in points:
        if p.get("step") is not None:
            by_name.setdefault(p["name"], []).append((int(p["step"]), float(p["value"])))
    charts: list[dict[str, Any]] = []
    for name, pairs in sorted(by_name.items()):
        pairs.sort()
        charts.append(
            {
                "id": f"metric-{len(charts)}",
                "title": name,
                "unit": name,
                "time": False,
                "x": [step for step, _ in pairs],
                "ends": [str(step) for step, _ in pairs],
                "series": [{"label": name, "values": [value for _, value in pairs]}],
            }
        )
    return charts


def newest_windows(windows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per version, the one window a page shows as its newest: the latest end; at a tie — a promoted candidate
    served as ``candidate`` and as ``stable`` in the window of its promotion — the stable one (the variant it serves
    in from then on). Every section of a page that shows "the newest window" takes it from here, so they agree."""
    newest: dict[int, dict[str, Any]] = {}
    for w in windows:
        fig = w["figures"]
        key = (fig["end"], fig.get("variant") == "stable")
        held = newest.get(fig["version"])
        if held is None or key > (held["figures"]["end"], held["figures"].get("variant") == "stable"):
            newest[fig["version"]] = w
    return newest


#: Statistics of a window's feature, in the order the monitoring page lists them.
FEATURE_STATS = ("psi", "ks", "p_value", "js", "hellinger", "w1_norm", "chi2_pvalue")


def feature_report(
    windows: list[dict[str, Any]], health: dict[str, Any] | None, policy: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Per version, its newest window's every feature statistic, the drift rule that applies to the feature and
    whether the monitor counted it drifted (its own word, from ``/health``), plus the prediction histogram."""
    rule = ((policy or {}).get("policy") or {}).get("drift") or {}
    drifted: dict[tuple[int, str], set[str]] = {}  # the monitor's verdict per (version, window end)
    for v in (health or {}).get("versions", []):
        drifted.setdefault((v["version"], v["window"]["end"]), set()).update(v.get("drifted_features") or [])
    out = []
    for version, shown in sorted(newest_windows(windows).items()):
        fig = shown["figures"]
        rows = []
        for feature, stats in sorted((fig.get("features") or {}).items()):
            categorical = stats.get("kind") == "categorical"
            statistic = rule.get("categorical_statistic" if categorical else "numeric_statistic", "psi")
            threshold = rule.get("categorical_threshold" if categorical else "numeric_threshold")
            op = "<" if statistic.endswith("pvalue") else ">"
            rows.append(
                {
                    "feature": feature,
                    "kind": stats.get("kind"),
                    "count": stats.get("count"),
                    "missing": stats.get("missing"),
                    "stats": [stats.get(k) for k in FEATURE_STATS],
                    "rule": f"{statistic} {op} {threshold}" if threshold is not None else statistic,
                    "drifted": feature in drifted.get((version, fig["end"]), set()),
                }
            )
        hist = fig.get("prediction_hist") or []
        out.append(
            {
                "version": version,
                "variant": fig.get("variant"),
                "window": {"start": fig["start"], "end": fig["end"]},
                "revision": shown.get("revision"),
                "revised_at": shown.get("updated_at"),
                "predictions": fig.get("predictions"),
                "rows": rows,
                "prediction_psi": (fig.get("prediction_drift") or {}).get("psi"),
                "prediction_drifted": "prediction" in drifted.get((version, fig["end"]), set()),
                "prediction_hist": hist,
            }
        )
    return out


def histogram_chart(report: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest window's prediction-score histogram of each version, as shares per score bin (one chart)."""
    bins = max((len(r["prediction_hist"]) for r in report), default=0)
    if bins == 0:
        return []
    series = []
    for r in report:
        hist = r["prediction_hist"]
        total = sum(hist) or 1
        values: list[float | None] = [h / total for h in hist] + [None] * (bins - len(hist))
        series.append({"label": f"v{r['version']}", "values": values})
    return [
        {
            "id": "prediction-hist",
            "title": "Prediction scores (share of the window per bin)",
            "unit": "share",
            "time": False,
            "x_label": "score bin",
            "x": list(range(bins)),
            "ends": [str(i) for i in range(bins)],
            "series": series,
        }
    ]
