"""What the monitoring page adds to the drift table: each feature's histogram against its reference, quality and
calibration over time (the label-free estimate with its band beside the realised accuracy), fairness gaps per group.

Reads only the monitor's public API (``/v1/windows`` figures, ``/v1/deployments/<d>/versions/<v>/distributions``)
with the user's token. Shaping is pure, so unit tests pin it down; charts are data for ``static/monitoring.js``
(uPlot), and every chart's figures are also in a table beside it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from vigil.console.shape import newest_windows
from vigil.console.upstream import Upstream
from vigil.kernels.fairness_gaps import gap_p_value

#: Quality figures drawn per version over time besides accuracy: (figure key, chart title).
CALIBRATION = (("ece", "Calibration error (ECE)"), ("brier", "Brier score"))
#: The fairness gaps the monitor's policy judges, with the policy field that holds each one's threshold.
GAPS = (
    ("demographic_parity_difference", "max_demographic_parity_difference", "Demographic parity difference"),
    ("equalized_odds_difference", "max_equalized_odds_difference", "Equalized odds difference"),
)


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _tick(label: str) -> str:
    """A short axis tick for a display bin: its lower bound to three digits (``[27.66, 31.2)`` → ``27.7``,
    ``< 27.66`` → ``<27.7``), or the label itself (a category)."""
    for prefix, shown in (("[", ""), ("< ", "<"), ("> ", ">"), ("= ", "")):
        if label.startswith(prefix):
            try:
                return shown + f"{float(label[len(prefix) :].split(',')[0]):.3g}"
            except ValueError:
                return label
    return label


def histograms(dist: dict[str, Any] | None, version: int) -> list[dict[str, Any]]:
    """One chart per feature of a version's newest window: reference and window shares on the same bins."""
    if not dist:
        return []
    out = []
    for i, f in enumerate(dist["features"]):
        ref, win = f["reference"], f["window"]
        out.append(
            {
                "id": f"hist-v{version}-{i}",
                "kind": "hist",
                "feature": f["name"],
                "feature_kind": f["kind"],
                "title": f"{f['name']}: reference vs window (v{version})",
                "bins": f["bins"],
                "ticks": [_tick(b) for b in f["bins"]],
                "series": [
                    {"label": "reference (training)", "values": ref["shares"]},
                    {"label": f"window v{version}", "values": win["shares"]},
                ],
                "n": {"reference": sum(ref["counts"]), "window": sum(win["counts"])},
                "missing": {"reference": ref["missing"], "window": win["missing"]},
            }
        )
    return out


def _by_version(windows: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Per version its windows (``/v1/windows`` items: figures with their revision), oldest first; at the same end
    the stable one last, so a version's last item is its newest as :func:`shape.newest_windows` picks it."""
    out: dict[int, list[dict[str, Any]]] = {}
    for w in sorted(windows, key=lambda w: (w["figures"]["end"], w["figures"].get("variant") == "stable")):
        out.setdefault(w["figures"]["version"], []).append(w)
    return out


def quality_rows(windows: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Per version, per window (oldest first): estimated accuracy with its ±3σ band, realised accuracy (once
    labels arrived) and whether it lies inside the band, calibration figures."""
    out: dict[int, list[dict[str, Any]]] = {}
    for version, items in _by_version(windows).items():
        rows = []
        for w in items:
            fig = w["figures"]
            est = ((fig.get("estimated") or {}).get("metrics") or {}).get("accuracy") or {}
            quality = fig.get("quality") or {}
            realised = est.get("realised") if est else None
            realised = realised if realised is not None else quality.get("accuracy")
            inside = None
            if est and realised is not None:
                inside = est["lower"] <= realised <= est["upper"]
            rows.append(
                {
                    "start": fig.get("start"),
                    "end": fig["end"],
                    "variant": fig.get("variant"),
                    "revision": w.get("revision"),
                    "revised_at": w.get("updated_at"),
                    "predictions": fig.get("predictions"),
                    "labels": fig.get("labels"),
                    "estimate": est.get("value"),
                    "lower": est.get("lower"),
                    "upper": est.get("upper"),
                    "realised": realised,
                    "inside": inside,
                    **{key: quality.get(key) for key, _ in CALIBRATION},
                }
            )
        out[version] = rows
    return out


def quality_charts(rows: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per version, estimated accuracy with its band and realised accuracy over time; then one chart per
    calibration figure with one line per version (a window without the figure is a gap)."""
    charts: list[dict[str, Any]] = []
    for version, rs in sorted(rows.items()):
        if not any(r["estimate"] is not None or r["realised"] is not None for r in rs):
            continue
        charts.append(
            {
                "id": f"quality-v{version}",
                "kind": "band",
                "title": f"Accuracy of v{version}: estimated (±3σ band) and realised",
                "unit": "accuracy",
                "x": [_ts(r["end"]) for r in rs],
                "series": [
                    {"label": "estimated", "values": [r["estimate"] for r in rs]},
                    {"label": "band low (−3σ)", "values": [r["lower"] for r in rs]},
                    {"label": "band high (+3σ)", "values": [r["upper"] for r in rs]},
                    {"label": "realised", "values": [r["realised"] for r in rs]},
                ],
            }
        )
    ends = sorted({r["end"] for rs in rows.values() for r in rs})
    at = {e: i for i, e in enumerate(ends)}
    for key, title in CALIBRATION:
        series = []
        for version, rs in sorted(rows.items()):
            values: list[float | None] = [None] * len(ends)
            for r in rs:
                values[at[r["end"]]] = r[key]
            if any(v is not None for v in values):
                series.append({"label": f"v{version}", "values": values})
        if series:
            charts.append({"id": f"quality-{key}", "kind": "lines", "title": title, "unit": key.upper(),
                           "x": [_ts(e) for e in ends], "series": series})  # fmt: skip
    return charts


def _gap(fair: dict[str, Any], key: str, rule: dict[str, Any], limit: str, label: str, count: int) -> dict[str, Any]:
    """One gap against its rule, judged as the monitor's rule does (services/vigil/monitor/rules.py): past the limit
    on enough rows, and — when the window's figures carry the test's p-value — that p-value below the rule's alpha."""
    value, threshold = fair.get(key), rule.get(limit)
    p_value = gap_p_value(fair, key, threshold) if threshold is not None else None
    large = value is not None and threshold is not None and value > threshold
    enough = count >= int(rule.get("min_samples", 0))
    real = p_value is None or p_value < float(rule.get("alpha", 0.01))
    return {
        "name": label,
        "value": value,
        "threshold": threshold,
        "p_value": p_value,
        "breached": large and enough and real,
        "noise": large and enough and not real,
    }


def fairness(
    windows: list[dict[str, Any]], dists: dict[int, dict[str, Any] | None], policy: dict[str, Any] | None
) -> dict[str, Any]:
    """The fairness rule in force; per version its newest window's gaps against their thresholds and its
    per-group rates; and the gaps over time (one chart per gap, a line per version plus the threshold)."""
    rule = ((policy or {}).get("policy") or {}).get("fairness") or {}
    versions = []
    for version, shown in sorted(newest_windows(windows).items()):
        fig = shown["figures"]
        fair = fig.get("fairness") or {}
        dist = dists.get(version) or {}
        if not fair and not dist.get("groups"):
            continue
        count = int(fair.get("count", 0))
        versions.append(
            {
                "version": version,
                "variant": fig.get("variant"),
                "start": fig.get("start"),
                "end": fig["end"],
                "revision": shown.get("revision"),
                "revised_at": shown.get("updated_at"),
                #: labels the per-group rates count beyond the gaps' revision (the monitor's next revision will)
                "pending_labels": dist.get("pending_labels") or 0,
                "attribute": fig.get("sensitive_attribute") or dist.get("sensitive_attribute"),
                "count": count,
                "judged": count >= int(rule.get("min_samples", 0)),
                "gaps": [_gap(fair, key, rule, limit, label, count) for key, limit, label in GAPS],
                "groups": [g for g in dist.get("groups") or [] if g["n"] > 0],
            }
        )
    by_version = {v: [w["figures"] for w in items] for v, items in _by_version(windows).items()}
    ends = sorted({f["end"] for figs in by_version.values() for f in figs if f.get("fairness")})
    at = {e: i for i, e in enumerate(ends)}
    charts = []
    for key, limit, label in GAPS:
        series: list[dict[str, Any]] = []
        for version, figs in sorted(by_version.items()):
            values: list[float | None] = [None] * len(ends)
            for f in figs:
                if (f.get("fairness") or {}).get(key) is not None:
                    values[at[f["end"]]] = f["fairness"][key]
            if any(v is not None for v in values):
                series.append({"label": f"v{version}", "values": values})
        if series and rule.get(limit) is not None:
            series.append({"label": "threshold", "values": [rule[limit]] * len(ends), "threshold": True})
            charts.append({"id": f"fair-{key}", "kind": "lines", "title": label, "unit": "gap",
                           "x": [_ts(e) for e in ends], "series": series})  # fmt: skip
    return {"rule": rule, "versions": versions, "charts": charts}


async def distributions(
    up: Upstream, token: str, name: str, windows: list[dict[str, Any]]
) -> dict[int, dict[str, Any] | None]:
    """Per version, the ``/distributions`` of exactly the window the page shows as its newest (its start and
    variant, not the monitor's own "newest", which a window closing meanwhile would move)."""
    shown = newest_windows(windows)
    versions = sorted(shown)
    found = await asyncio.gather(
        *(
            up.get_or_none(
                "monitor",
                f"/v1/deployments/{name}/versions/{v}/distributions",
                token,
                start=shown[v]["figures"]["start"],
                variant=shown[v]["figures"].get("variant"),
            )
            for v in versions
        )
    )
    return dict(zip(versions, found, strict=True))


def revised_since(windows: list[dict[str, Any]], dists: dict[int, dict[str, Any] | None]) -> bool:
    """Did a window shown get a new revision between the read of ``/v1/windows`` and its ``/distributions``?"""
    shown = newest_windows(windows)
    return any(d is not None and d.get("revision") != shown[v].get("revision") for v, d in dists.items())


def _window_of(dist: dict[str, Any]) -> dict[str, Any]:
    """Which window (and revision) a version's histograms and per-group rates are of, as the page says it."""
    return {
        **dist["window"],
        "variant": dist.get("variant"),
        "revision": dist.get("revision"),
        "revised_at": dist.get("revised_at"),
        "pending_labels": dist.get("pending_labels") or 0,
    }


def monitoring_detail(
    windows: list[dict[str, Any]], dists: dict[int, dict[str, Any] | None], policy: dict[str, Any] | None
) -> dict[str, Any]:
    """The monitoring page's histograms, quality and fairness from one read of the windows and the distributions
    of the windows it shows."""
    versions = sorted(dists)
    hist = {v: histograms(dists[v], v) for v in versions}
    rows = quality_rows(windows)
    quality = quality_charts(rows)
    fair = fairness(windows, dists, policy)
    charts = [c for v in versions for c in hist[v]] + quality + fair["charts"]
    return {
        "histograms": hist,
        "distribution_windows": {v: _window_of(d) for v, d in dists.items() if d},
        "quality_rows": rows,
        "quality_charts": quality,
        "fairness": fair,
        "monitoring_charts": charts,
    }


def estimate_charts(windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The deployment page's estimated-vs-realised accuracy charts (one per version, band drawn)."""
    return [c for c in quality_charts(quality_rows(windows)) if c["kind"] == "band"]
