"""Charts of a version's serving life as inline SVG, drawn by matplotlib's SVG backend from the pack's own data.

matplotlib is optional (the ``report`` extra): without it the HTML shows the same figures as tables only. Text is
drawn as paths, so the SVG needs no font; the hash salt is fixed so the same pack renders the same bytes.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

from vigil.report.cite import value


def _series(windows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for window in windows:
        data = value(window.get("data"), {}) or {}
        by_variant.setdefault(str(data.get("variant", "?")), []).append(data)
    return by_variant


def _when(data: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(data["window"]["start"]).replace("Z", "+00:00"))


def max_psi(data: dict[str, Any]) -> float | None:
    """The largest PSI over the window's features (None when no feature has one)."""
    values = [f.get("psi") for f in (data.get("features") or {}).values() if f.get("psi") is not None]
    return max(values) if values else None


def quality_and_drift_svg(windows: list[dict[str, Any]]) -> str | None:
    """One SVG with two panels over time: realised (and estimated) accuracy, and the largest feature PSI per
    window; None when matplotlib is missing or there is nothing to draw."""
    if not windows:
        return None
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        return None
    matplotlib.rcParams["svg.hashsalt"] = "vigil-report"
    matplotlib.rcParams["svg.fonttype"] = "path"
    figure = Figure(figsize=(7.5, 4.2), layout="constrained")
    quality, drift = figure.subplots(2, 1, sharex=True)
    for variant, points in sorted(_series(windows).items()):
        times = [_when(p) for p in points]
        accuracy = [(p.get("quality") or {}).get("accuracy") for p in points]
        if any(a is not None for a in accuracy):
            quality.plot(times, [float("nan") if a is None else a for a in accuracy], marker="o", ms=3,
                         label=f"{variant}: realised")  # fmt: skip
        estimated = [((p.get("estimated") or {}).get("metrics") or {}).get("accuracy") for p in points]
        if any(e is not None for e in estimated):
            mid = [float("nan") if e is None else e["value"] for e in estimated]
            low = [float("nan") if e is None else e["lower"] for e in estimated]
            high = [float("nan") if e is None else e["upper"] for e in estimated]
            quality.plot(times, mid, linestyle="--", label=f"{variant}: estimated (CBPE)")
            quality.fill_between(times, low, high, alpha=0.15)
        psi = [max_psi(p) for p in points]
        drift.plot(times, [float("nan") if v is None else v for v in psi], marker="o", ms=3, label=variant)
    quality.set_ylabel("accuracy")
    quality.legend(fontsize=7, loc="lower left")
    quality.grid(alpha=0.3)
    drift.set_ylabel("max feature PSI")
    drift.axhline(0.2, color="grey", linewidth=0.8, linestyle=":")
    drift.legend(fontsize=7, loc="upper left")
    drift.grid(alpha=0.3)
    drift.tick_params(axis="x", labelrotation=20, labelsize=7)
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    if "<metadata>" in svg:  # the RDF block names its vocabularies by URL; the document needs none of it
        svg = svg[: svg.index("<metadata>")] + svg[svg.index("</metadata>") + len("</metadata>") :]
    return svg
