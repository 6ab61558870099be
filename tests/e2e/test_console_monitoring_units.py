"""The monitoring views' shaping without a browser (monitoring_view.py): estimate vs realised per window, the band
check, fairness gaps judged as the monitor's rule judges them, histogram charts from the monitor's answer."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.console import monitoring_view as mv

pytestmark = pytest.mark.unit


def _window(version: int, end: str, *, est: float | None, realised: float | None, fair: dict | None = None) -> dict:
    fig: dict[str, Any] = {"version": version, "variant": "stable", "end": f"2026-12-07T03:00:{end}Z",
                           "predictions": 100, "labels": 50 if realised is not None else 0,
                           "quality": {"accuracy": realised, "ece": 0.05} if realised is not None else {},
                           "fairness": fair or {}, "sensitive_attribute": "site" if fair else None}  # fmt: skip
    if est is not None:
        fig["estimated"] = {"metrics": {"accuracy": {"value": est, "lower": est - 0.02, "upper": est + 0.02,
                                                     "realised": realised}}}  # fmt: skip
    return {"figures": fig}


def test_quality_rows_put_estimate_band_and_realised_side_by_side() -> None:
    windows = [_window(3, "16", est=0.80, realised=0.81), _window(3, "08", est=0.80, realised=0.70),
               _window(3, "24", est=0.79, realised=None), _window(1, "08", est=None, realised=0.9)]  # fmt: skip
    rows = mv.quality_rows(windows)
    assert [r["end"][-3:-1] for r in rows[3]] == ["08", "16", "24"]  # oldest first
    assert [r["inside"] for r in rows[3]] == [False, True, None]  # 0.70 is below the band [0.78, 0.82]
    assert rows[1][0] == {**rows[1][0], "estimate": None, "realised": 0.9, "inside": None}
    charts = mv.quality_charts(rows)
    band = next(c for c in charts if c["id"] == "quality-v3")
    assert [s["label"] for s in band["series"]] == ["estimated", "band low (−3σ)", "band high (+3σ)", "realised"]
    assert band["series"][3]["values"] == [0.70, 0.81, None]
    ece = next(c for c in charts if c["id"] == "quality-ece")
    assert [s["label"] for s in ece["series"]] == ["v1", "v3"] and ece["series"][0]["values"] == [0.05, None, None]


def test_fairness_gaps_are_breached_only_over_the_threshold_with_enough_rows() -> None:
    policy = {"policy": {"fairness": {"max_demographic_parity_difference": 0.2, "max_equalized_odds_difference": 0.2,
                                      "min_samples": 100}}}  # fmt: skip
    fair = {"demographic_parity_difference": 0.3, "equalized_odds_difference": 0.1, "count": 150.0}
    groups = [{"group": "a", "n": 80, "selection_rate": 0.6, "tpr": 0.9, "fpr": 0.2},
              {"group": "other", "n": 0, "selection_rate": None, "tpr": None, "fpr": None}]  # fmt: skip
    out = mv.fairness([_window(2, "08", est=None, realised=0.8, fair=fair)], {2: {"groups": groups}}, policy)
    (v2,) = out["versions"]
    assert v2["attribute"] == "site" and v2["judged"]
    assert [(g["value"], g["breached"]) for g in v2["gaps"]] == [(0.3, True), (0.1, False)]
    assert [g["group"] for g in v2["groups"]] == ["a"]  # groups without a labelled row are left out
    assert out["charts"][0]["series"][-1] == {"label": "threshold", "values": [0.2], "threshold": True}
    few = mv.fairness([_window(2, "08", est=None, realised=0.8, fair={**fair, "count": 99.0})], {}, policy)
    assert not few["versions"][0]["judged"] and not any(g["breached"] for g in few["versions"][0]["gaps"])
    assert mv.fairness([_window(2, "08", est=None, realised=0.8)], {}, policy)["versions"] == []


def test_histogram_charts_carry_both_sides_and_short_ticks() -> None:
    dist = {"features": [{"name": "age", "kind": "numeric", "bins": ["< 20", "[20, 30)", "> 30"],
                          "reference": {"counts": [1, 2, 1], "shares": [0.25, 0.5, 0.25], "missing": 0},
                          "window": {"counts": [0, 1, 3], "shares": [0.0, 0.25, 0.75], "missing": 2}}]}  # fmt: skip
    (chart,) = mv.histograms(dist, 3)
    assert chart["ticks"] == ["<20", "20", ">30"] and chart["n"] == {"reference": 4, "window": 4}
    assert [s["values"] for s in chart["series"]] == [[0.25, 0.5, 0.25], [0.0, 0.25, 0.75]]
    assert mv.histograms(None, 3) == []
